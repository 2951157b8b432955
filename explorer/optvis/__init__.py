"""Feature visualisation: parameterisations, transforms, priors, objectives and the render loop."""

from . import objectives, param, priors, transforms
from .objectives import (Context, Objective, channel, class_logit, class_probability, deepdream, direction, diversity,
                         neuron)
from .optimise import OptimisationResult, optimise
from .param import CPPNParam, FourierParam, ImageParam, PixelParam, make_param
from .render import FAST, RenderResult, RenderSettings, evaluate, render

__all__ = [
    "CPPNParam", "Context", "FAST", "FourierParam", "ImageParam", "Objective", "OptimisationResult", "PixelParam",
    "RenderResult", "RenderSettings", "channel", "class_logit", "class_probability", "deepdream", "direction",
    "diversity", "evaluate", "make_param", "neuron", "objectives", "optimise", "param", "priors", "render",
    "transforms",
]
