import pytest
import torch

from explorer.errors import UnitOutOfRangeError, UnknownLayerError, UserInputError
from explorer.optvis import Context, RenderSettings, evaluate, objectives, priors, render

# 32-px images are too small for transformation robustness: transforms are tested on their own.
FAST = RenderSettings(size=32, steps=24, lr=0.05, seed=0, transforms="none")


def gain(model, objective, settings=FAST, batch=None):
    start = settings.with_(steps=0)
    before = render(model, objective, start, batch=batch).final_activation
    after = render(model, objective, settings, batch=batch).final_activation
    return before, after


@pytest.mark.parametrize(
    "make",
    [
        lambda: objectives.channel("conv2", [0, 3, 5]),
        lambda: objectives.neuron("conv3", 2),
        lambda: objectives.deepdream("conv2"),
        lambda: objectives.class_logit([1, 7]),
        lambda: objectives.class_probability(4, log=False),
        lambda: objectives.direction("conv3", torch.linspace(-1, 1, 16)),
        lambda: objectives.direction("conv3", torch.linspace(-1, 1, 16), cosine=True),
    ],
)
def test_each_objective_rises(tiny, make):
    objective = make()
    before, after = gain(tiny, objective)
    assert (after > before).all(), (objective.name, before, after)


def test_diversity_rises(tiny):
    objective = objectives.diversity("conv2")
    before, after = gain(tiny, objective, FAST.with_(steps=40), batch=4)
    assert after.mean() > before.mean()


def test_composition_matches_arithmetic(tiny):
    a = objectives.channel("conv2", 1)
    b = objectives.deepdream("conv3")
    x = torch.rand(2, 3, 32, 32)
    acts = tiny.activations(x, ["conv2", "conv3"])
    ctx = Context(acts, x)
    combined = a + 2 * b - 0.5 * priors.total_variation() - a / 4
    expected = a(ctx) + 2 * b(ctx) - 0.5 * priors.tv_value(x) - a(ctx) / 4
    assert torch.allclose(combined(ctx), expected)
    assert combined.layers == {"conv2", "conv3"}
    assert torch.allclose(sum([a, b])(ctx), a(ctx) + b(ctx))
    assert torch.allclose((-a)(ctx), -a(ctx))


def test_priors_are_left_out_of_reported_activation(tiny):
    a = objectives.channel("conv2", 1)
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(evaluate(tiny, a - 100 * priors.total_variation(), x), evaluate(tiny, a, x))


def test_validation_errors(tiny):
    with pytest.raises(UnitOutOfRangeError, match="0–15"):
        objectives.channel("conv2", 16).validate(tiny.layer_shapes)
    with pytest.raises(UnitOutOfRangeError, match="class"):
        objectives.class_logit(10).validate(tiny.layer_shapes)
    with pytest.raises(UnknownLayerError, match="conv2"):
        objectives.channel("conv22", 0).validate(tiny.layer_shapes)
    with pytest.raises(UserInputError):
        objectives.channel("conv2", [0, 1]) + objectives.channel("conv3", [0, 1, 2])
