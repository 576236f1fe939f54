"""Density-map crowd counter: compact CSRNet-style net with parameter-free attention (see MODEL_CARD in
models/crowd_default). Entry points: :class:`perception.crowd.api.CrowdCounter` for inference,
:func:`perception.crowd.train.train_crowd`, :func:`perception.crowd.evaluate.evaluate_dir`,
:func:`perception.crowd.export.export_crowd_onnx`, :func:`perception.crowd.sim_scenes.simulated_samples`
(ray-cast training scenes) and :func:`perception.crowd.ablation.run_ablation`."""
