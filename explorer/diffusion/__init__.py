"""Diffusion inspector: data and trainers for the project's own models, diffusion model loading, the chain
recorder (x_t, x̂0, ε and probe probabilities per step) and its analysis/exports."""
