"""Files: load/save (model_io.py, atomic and validated), file safety (safe_io.py), embedded
weights read and written without a parsed copy (stream_read.py, stream_write.py), JSON
values and atomic text writes (jsonio.py), heap pages handed back (heap.py), and progress
lines on the terminal (progress.py)."""
