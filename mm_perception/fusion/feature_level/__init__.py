"""Feature-level fusion: per-modality BEV encoders, a fuser and one CenterPoint-style head.

Split as every model of the stack (DESIGN.md): :mod:`.config`, :mod:`.model`,
:mod:`.processor` (pre/post-processing, normalisation state), :mod:`.export` (ONNX), plus the
training data (:mod:`.dataset`), training (:mod:`.train`) and the detector that runs it on a
sensor set through a runtime backend (:mod:`.detector`). torch is imported only by the model,
export and training modules.
"""
