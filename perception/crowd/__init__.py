"""Density-map crowd counter: ImageNet-pretrained MobileNetV2 front end, SimAM attention, dilated back end (see
MODEL_CARD in models/crowd_default). Entry points: :class:`perception.crowd.api.CrowdCounter` for inference,
:func:`perception.crowd.train.train_crowd`, :func:`perception.crowd.evaluate.evaluate_model`,
:func:`perception.crowd.export.export_crowd_onnx`. Experiment drivers (the SimAM ablation) live in
``experiments/``."""
