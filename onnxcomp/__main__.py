from onnxcomp.cli import run

run()
