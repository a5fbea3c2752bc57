"""File I/O at the edges: atomic writes, PNG and JSON with errors that name the file."""
