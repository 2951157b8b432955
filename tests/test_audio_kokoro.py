"""Issue 19: Kokoro-82M's neural voices as an opt-in engine of the keyword data (explorer/audio/kokoro.py)."""

from __future__ import annotations

import numpy as np
import pytest

from explorer.audio import kokoro
from explorer.audio.wordsdata import (KEYWORDS, KOKORO, KOKORO_SPEEDS, SAMPLE_RATE, Utterance, label_of, recipe,
                                      synthesise)

needs_kokoro = pytest.mark.skipif(kokoro.missing() is not None, reason=str(kokoro.missing()))


def test_kokoro_recipe_is_every_voice_and_pair_at_each_speed_deterministically():
    utterances = recipe(KOKORO)
    assert utterances == recipe(KOKORO)
    speakers = {u.voice for u in utterances}
    assert len(speakers) == len(kokoro.VOICES) + len(kokoro.VOICES) * (len(kokoro.VOICES) - 1) // 2
    assert {u.rate for u in utterances} == set(KOKORO_SPEEDS)
    keywords = [u for u in utterances if u.word in KEYWORDS]
    assert len(keywords) == len(KEYWORDS) * len(speakers) * len(KOKORO_SPEEDS)  # every keyword at every setting
    assert all(u.label == label_of(u.word) and u.engine == KOKORO for u in utterances)


@needs_kokoro
def test_kokoro_says_keywords_that_an_independent_recogniser_names(tmp_path):
    """The engine is only worth training on if it says the words: pocketsphinx (closed set over the keywords,
    where it may also answer nothing) names most of five words said by one voice. The clips are 16 kHz, trimmed,
    and a slower speed makes a longer clip."""
    from explorer.audio.hearing import decode

    words = ("yes", "left", "right", "seven", "three")
    clips = synthesise([Utterance(w, label_of(w), KOKORO, "jm_kumo") for w in words], workdir=tmp_path)
    heard = [decode(c, KEYWORDS) for c in clips]
    assert sum(h == w for h, w in zip(heard, words)) >= 4, heard
    assert all(0.2 * SAMPLE_RATE < len(c) <= SAMPLE_RATE for c in clips)
    slow, fast = synthesise([Utterance("seven", label_of("seven"), KOKORO, "jm_kumo", rate=r) for r in (0.85, 1.2)],
                            workdir=tmp_path)
    assert len(slow) > 1.15 * len(fast)


@needs_kokoro
def test_a_blend_is_a_voice_between_its_two_and_bad_names_are_refused():
    a, b, mid = kokoro.style("jf_alpha"), kokoro.style("jm_kumo"), kokoro.style("jf_alpha+jm_kumo")
    assert np.allclose(mid, (a + b) / 2) and not np.allclose(mid, a)
    with pytest.raises(ValueError, match="Unknown Kokoro voice"):
        kokoro.style("af_heart")
