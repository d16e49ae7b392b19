"""MONAI `Inferer`s the bundle configs name: `PlainTensorInferer` (PyTorch without MetaTensor dispatch inside the
network), `OnnxInferer` (an exported model run by ONNX Runtime) and `OpenVinoInferer` (the network run by
OpenVINO, from the exported IR or converted in memory)."""
