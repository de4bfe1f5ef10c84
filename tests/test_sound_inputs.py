"""pipeline.inputs' in-process read of plain wavs: the decoder's samples, and every other file left to it."""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pipeline import inputs, media


def wav(path: Path, *args: str, seconds: float = 12.0) -> Path:
    """A real wav from ffmpeg: a tone under noise, ``args`` setting its rate, channels and codec."""
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=300:sample_rate=44100:duration={seconds}", "-f", "lavfi", "-i",
                    f"anoisesrc=a=0.1:d={seconds}", "-filter_complex", "amix=inputs=2", *args, str(path)], check=True)
    return path


def test_a_16k_mono_pcm_wav_is_read_in_process_with_the_decoders_samples(tmp_path: Path) -> None:
    path = wav(tmp_path / "clip.wav", "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le")
    fast = inputs.plain_wav(path, 0.0, 10.0)
    decoded = media.decode_audio(path, sr=16000, start_s=0.0, duration_s=10.25)[:160_000]
    assert fast is not None and fast.dtype == np.float32 and fast.shape == (160_000,)
    np.testing.assert_array_equal(fast, decoded)
    np.testing.assert_array_equal(inputs.listen(path, inputs.SoundOptions()), decoded)
    short = inputs.plain_wav(path, 0.0, 20.0)  # a window past the end: the whole file, as the decoder gives it
    assert short is not None and short.shape == (192_000,)


@pytest.mark.parametrize("args", [("-ar", "44100", "-ac", "1", "-c:a", "pcm_s16le"),
                                  ("-ar", "16000", "-ac", "2", "-c:a", "pcm_s16le"),
                                  ("-ar", "16000", "-ac", "1", "-c:a", "pcm_f32le")])
def test_other_wavs_and_later_starts_go_to_the_decoder(tmp_path: Path, args: tuple[str, ...]) -> None:
    path = wav(tmp_path / "clip.wav", *args)
    assert inputs.plain_wav(path, 0.0, 10.0) is None
    assert inputs.listen(path, inputs.SoundOptions()).shape == (160_000,)
    plain = wav(tmp_path / "plain.wav", "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le")
    assert inputs.plain_wav(plain, 1.0, 5.0) is None  # --start: the decoder's window


def test_broken_and_empty_wavs_keep_their_one_sentence(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200))
    assert inputs.plain_wav(garbage, 0.0, 10.0) is None
    with pytest.raises(inputs.InputError, match="garbage.wav") as err:
        inputs.listen(garbage, inputs.SoundOptions())
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty.wav"
    soundfile.write(empty, np.zeros(0, np.int16), 16000, subtype="PCM_16")
    assert inputs.plain_wav(empty, 0.0, 10.0) is None
    with pytest.raises(inputs.InputError, match="empty.wav"):
        inputs.listen(empty, inputs.SoundOptions())
