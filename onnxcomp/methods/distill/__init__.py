"""Knowledge distillation: the compressed graph trained against the original model.

forms.py (no torch): what trains, found by the storage forms onnxcomp writes, and the
write-back by tensor name; optable.py: the ONNX ops as torch functions; student.py: the
graph as a torch module (straight-through codes, masks); train.py: the task's losses and
the loop; passes.py: ``DistillPass``, the pipeline's last step, with the held-back guard.
Only optable/student/train import torch (``pip install 'onnxcomp[distill]'``).
"""

from onnxcomp.methods.distill.passes import DistillPass

__all__ = ["DistillPass"]
