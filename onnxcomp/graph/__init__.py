"""The model as a graph: edits (edit.py: constants, initializers, inserting nodes), unique
names (naming.py), where weights hide and their channel axis (weights.py), weights read a
block at a time (streaming.py), element types onnx_ir cannot hold (opaque_types.py), and how
each weight is stored in a file (storage_forms.py, for inspect and check)."""
