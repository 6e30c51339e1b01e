"""What a run leaves on disk: the run folder, PNGs carrying their settings, frames and videos."""
