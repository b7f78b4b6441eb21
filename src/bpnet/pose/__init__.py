"""The skeleton contract every stage reads: joints, limbs, PAF order, flips, dataset mapping."""

from bpnet.pose.skeleton import DEFAULT_POSE_CONFIG, Joint, PoseConfig, load_pose_config

__all__ = ["DEFAULT_POSE_CONFIG", "Joint", "PoseConfig", "load_pose_config"]
