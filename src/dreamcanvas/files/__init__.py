"""Everything dreamcanvas reads from or writes to disk, done one safe way.

* :mod:`~dreamcanvas.files.atomic` - writes: unique temporary files, created exclusively, replaced atomically;
  a full disk keeps the previous version and says what to free.
* :mod:`~dreamcanvas.files.checkpoints` - ``.pt`` files: weights-only unpickling, so a file never runs code.
* :mod:`~dreamcanvas.files.pictures` - pictures: the size is checked from the header before decoding, large
  pictures are shrunk while decoding, every mode is converted to 8-bit RGB correctly.

SECURITY.md at the repository root lists which files are read, how, and the limits that apply.
"""
