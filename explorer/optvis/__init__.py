"""Feature visualisation: parameterisations, transforms, priors, objectives and the render loop."""

from . import objectives, param, priors, transforms
from .objectives import (Context, Objective, channel, class_logit, class_probability, deepdream, direction, diversity,
                         neuron)
from .optimise import Execution, ImageHandling, OptimisationResult, Progress, Schedule, Selection, optimise
from .param import CPPNParam, FourierParam, ImageParam, PixelParam, make_param
from .render import FAST, RenderResult, RenderSettings, evaluate, render

__all__ = [
    "CPPNParam", "Context", "Execution", "FAST", "FourierParam", "ImageHandling", "ImageParam", "Objective",
    "OptimisationResult", "PixelParam", "Progress", "RenderResult", "RenderSettings", "Schedule", "Selection",
    "channel", "class_logit", "class_probability", "deepdream", "direction", "diversity", "evaluate", "make_param",
    "neuron", "objectives", "optimise", "param", "priors", "render", "transforms",
]
