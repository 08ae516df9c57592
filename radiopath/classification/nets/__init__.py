"""Networks of the deep CT classification pipelines, one per module."""

from radiopath.classification.nets.cnn3d import CNN3d
from radiopath.classification.nets.multiphase import MultiPhaseResNet
from radiopath.classification.nets.projector import MLPProjector
from radiopath.classification.nets.resnet2d import resnet_encoder
from radiopath.classification.nets.rgcnn import RGCNN
from radiopath.classification.nets.simclr import SimCLR

__all__ = ["CNN3d", "MLPProjector", "MultiPhaseResNet", "RGCNN", "SimCLR", "resnet_encoder"]
