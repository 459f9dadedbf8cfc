"""fv2v: the neural profile after face-vid2vid (Wang, Mallya, Liu, CVPR 2021).

Networks: F (appearance.py), L (keypoints.py), H (head_pose.py), Δ (expression.py), M (motion.py),
G (generator.py), D (discriminator.py); model.py wires them for inference, trainer.py for training,
profile.py plugs them into the codec as an Estimator / Renderer pair.
"""

from models.fv2v.config import CONFIGS, Fv2vConfig, get_config

__all__ = ["CONFIGS", "Fv2vConfig", "get_config"]
