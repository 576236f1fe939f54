"""LiDAR-camera fusion detector: pillars, image encoder, TransFusion-style decoder, heads."""
