"""pipeline.inputs' in-process read of plain wavs and flacs: the decoder's samples, every other file left to it."""
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


@pytest.mark.parametrize("name, codec", [("clip.wav", "pcm_s16le"), ("clip.flac", "flac"), ("CLIP.FLAC", "flac")])
def test_a_16k_mono_16_bit_file_is_read_in_process_with_the_decoders_samples(tmp_path: Path, name: str,
                                                                             codec: str) -> None:
    path = wav(tmp_path / name, "-ar", "16000", "-ac", "1", "-c:a", codec, "-sample_fmt", "s16")
    fast = inputs.plain_pcm(path, 0.0, 10.0)
    decoded = media.decode_audio(path, sr=16000, start_s=0.0, duration_s=10.25)[:160_000]
    assert fast is not None and fast.dtype == np.float32 and fast.shape == (160_000,)
    np.testing.assert_array_equal(fast, decoded)
    np.testing.assert_array_equal(inputs.listen(path, inputs.SoundOptions()), decoded)
    short = inputs.plain_pcm(path, 0.0, 20.0)  # a window past the end: the whole file, as the decoder gives it
    assert short is not None and short.shape == (192_000,)


@pytest.mark.parametrize("name, args", [("clip.wav", ("-ar", "44100", "-ac", "1", "-c:a", "pcm_s16le")),
                                        ("clip.wav", ("-ar", "16000", "-ac", "2", "-c:a", "pcm_s16le")),
                                        ("clip.wav", ("-ar", "16000", "-ac", "1", "-c:a", "pcm_f32le")),
                                        ("clip.flac", ("-ar", "16000", "-ac", "1", "-sample_fmt", "s32")),
                                        ("clip.flac", ("-ar", "22050", "-ac", "1")),
                                        ("clip.ogg", ("-ar", "16000", "-ac", "1", "-c:a", "libvorbis"))])
def test_other_files_and_later_starts_go_to_the_decoder(tmp_path: Path, name: str, args: tuple[str, ...]) -> None:
    path = wav(tmp_path / name, *args)
    assert inputs.plain_pcm(path, 0.0, 10.0) is None
    assert inputs.listen(path, inputs.SoundOptions()).shape == (160_000,)
    plain = wav(tmp_path / "plain.wav", "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le")
    assert inputs.plain_pcm(plain, 1.0, 5.0) is None  # --start: the decoder's window


@pytest.mark.parametrize("name, content", [("garbage.wav", b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(200)),
                                           ("garbage.flac", b"fLaC" + bytes(200)), ("empty.wav", None)])
def test_broken_and_empty_files_keep_their_one_sentence(tmp_path: Path, name: str, content: bytes | None) -> None:
    path = tmp_path / name
    if content is None:  # a valid wav header, no samples
        soundfile.write(path, np.zeros(0, np.int16), 16000, subtype="PCM_16")
    else:
        path.write_bytes(content)
    assert inputs.plain_pcm(path, 0.0, 10.0) is None
    with pytest.raises(inputs.InputError, match=name) as err:
        inputs.listen(path, inputs.SoundOptions())
    assert "\n" not in str(err.value)
