"""Training data: captioned image folders (:mod:`.captions`) and the offline clip-art corpus (:mod:`.clipart`)."""

from pathlib import Path

OPENCLIPART_ROOT = Path("/usr/share/openclipart/png")
"""Where Debian's ``openclipart-png`` puts its pictures."""
EMOJI_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
"""Where Debian's ``fonts-noto-color-emoji`` puts its font."""
