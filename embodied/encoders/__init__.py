"""Modality encoders: camera images (a ViT) and point clouds (PointBERT style)."""
