"""MONAI `Inferer`s the bundle configs name: `PlainTensorInferer` (PyTorch without MetaTensor dispatch inside the
network) and `OnnxInferer` (an exported model run by ONNX Runtime)."""
