"""Audio hallucinations: speech (Silero VAD) and music (musicnn) networks in torch, STFT and
Griffin-Lim, and spectrogram dreams through the one optimisation loop."""
