"""The op names the table runs, by domain, without torch (a graph is refused before torch
is imported). tests/methods/test_distill_ops.py checks them against the torch table."""

from __future__ import annotations

ONNX = frozenset(
    """Abs Add And ArgMax ArgMin AveragePool BatchNormalization BitShift Cast CastLike Ceil
    Clip Concat Constant ConstantOfShape Conv ConvInteger ConvTranspose Cos CumSum
    DequantizeLinear Div Dropout DynamicQuantizeLinear Einsum Elu Equal Erf Exp Expand
    Flatten Floor GRU Gather GatherElements Gelu Gemm GlobalAveragePool GlobalMaxPool Greater
    GreaterOrEqual HardSigmoid HardSwish Identity If InstanceNormalization LSTM
    LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LpNormalization MatMul
    MatMulInteger Max MaxPool Mean Min Mod Mul Neg Not Or PRelu Pad Pow QLinearConv
    QLinearMatMul QuantizeLinear Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
    ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
    Reshape Resize Round ScatterElements Selu Shape Sigmoid Sign Sin Size Slice Softmax
    Softplus Softsign Split Sqrt Squeeze Sub Sum Tanh Tile Transpose Trilu Unsqueeze Upsample
    Where Xor""".split()
)
MICROSOFT = frozenset({"GatherBlockQuantized", "MatMulNBits"})
SUPPORTED = {"": ONNX, "ai.onnx": ONNX, "com.microsoft": MICROSOFT}
# Traditional-ML ops (ai.onnx.ml: trees, ZipMap, label encoders) work on maps, strings and
# discrete splits: nothing there has a gradient, so they are refused by name.
