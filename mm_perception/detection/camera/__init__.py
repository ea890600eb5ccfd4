"""Camera object detector: a small CenterNet-style 2D detector trained on simulator images,
and the lifting of its boxes to 3D objects in ``base_link``.

Modules (one job each): ``config`` (settings), ``model`` (torch network), ``processor``
(normalisation, decoding, target encoding), ``dataset`` (simulated training data),
``train`` (training loop, ``mm-perception train camera``), ``detector`` (inference:
:class:`~mm_perception.detection.camera.detector.CameraDetector`), ``lift`` (2D -> 3D),
``export`` (ONNX). Import them directly; this package imports nothing heavy by itself.
"""
