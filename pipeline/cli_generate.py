"""``s2s generate``, ``s2s interpolate``, ``s2s edit``: thin commands over pipeline.controls and pipeline.edit.

Models are the pipeline's artifacts unless ``--official DIR`` (the published files) or an explicit path
says otherwise (pipeline.sound2image). Every bad input ends with one sentence and exit code 2.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable

import typer

from pipeline.cli_common import fail

Official = Annotated[Path | None, typer.Option(
    help="folder of the published files: sound2scene.pth, swav.pth.tar (or swav_800ep_pretrain.pth.tar), "
         "icgan_biggan_imagenet_res128/")]
GeneratorOpt = Annotated[Path | None, typer.Option(
    "--generator", help="our generator.pt or a published icgan folder (default: artifacts/generator.pt)")]
AudioEncoderOpt = Annotated[Path | None, typer.Option(
    help="our audio_encoder.pt or sound2scene.pth (default: artifacts/audio_encoder.pt)")]
ImageEncoderOpt = Annotated[Path | None, typer.Option(
    help="our image_encoder.pt or a SwAV .pth.tar, for image inputs (default: artifacts/image_encoder.pt)")]
Seed = Annotated[int, typer.Option(help="seed of the drawn noise")]
Truncation = Annotated[float | None, typer.Option(help="redraw drawn noise outside [-t, t] (default: no truncation)")]
Start = Annotated[float, typer.Option(help="seconds into each sound file where listening starts")]
Duration = Annotated[float | None, typer.Option(
    help="seconds heard (default: the encoder's input, 10 s for the paper); tiled or cut to the input")]
Device = Annotated[str, typer.Option(help="cpu (default: the same images on any machine) | cuda | auto")]
Threads = Annotated[int, typer.Option(help="torch CPU threads (0: torch's default; 1 is fastest on a busy machine)")]


def _guarded(body: Callable[[], str]) -> None:
    """Run ``body`` and print its summary line; input errors become one sentence and exit code 2."""
    from pipeline.inputs import InputError

    try:
        message = body()
    except InputError as exc:
        fail(str(exc).splitlines()[0])
    except ValueError as exc:  # an unknown or missing device
        fail(str(exc).splitlines()[0])
    typer.echo(message)


def _device(name: str, threads: int):
    """The torch device called ``name``, after setting the CPU thread count (``threads`` > 0)."""
    import torch

    from pipeline.devices import pick_device

    if threads > 0:
        torch.set_num_threads(threads)
    return pick_device(name)


def generate(
    out: Annotated[Path, typer.Option(help="folder for PNGs + grid.png, or OUT.npy: raw images in [-1, 1], NCHW")],
    inputs_: Annotated[list[Path] | None, typer.Argument(
        metavar="AUDIO_OR_VIDEO...",
        help="audio or video files (wav, flac, mp3, ogg, m4a, mp4, webm, ...): the first audio track",
        show_default=False)] = None,
    features: Annotated[Path | None, typer.Option(help="instead of files: instance features .npy [N, feat_dim]")]
    = None,
    noise: Annotated[Path | None, typer.Option(
        help="noise .npy: [N, dim_z] with --features, [n, dim_z] shared by every file (default: from --seed)")] = None,
    n: Annotated[int, typer.Option("--n", help="images per input file (each its own noise, shared by the files)")] = 4,
    seed: Seed = 0,
    truncation: Truncation = None,
    gain: Annotated[float, typer.Option(help="volume: the waveform is multiplied by this (then clipped to [-1, 1])")]
    = 1.0,
    mix: Annotated[Path | None, typer.Option(help="a second sound mixed into every input's waveform")] = None,
    mix_ratio: Annotated[float, typer.Option(help="share of --mix in the mixed waveform, 0..1")] = 0.5,
    start: Start = 0.0,
    duration: Duration = None,
    official: Official = None,
    generator: GeneratorOpt = None,
    audio_encoder: AudioEncoderOpt = None,
    save_features: Annotated[Path | None, typer.Option(help="also write the audio features [N, D] (.npy)")] = None,
    batch: Annotated[int, typer.Option(help="images per generator pass")] = 16,
    device: Device = "cpu",
    threads: Threads = 0,
) -> None:
    """Draw the scene of each sound (or of each feature row): PNGs plus a grid whose rows start with the sound's
    spectrogram. Same files, seed and models give the same images."""

    def body() -> str:
        from pipeline import inputs  # light: bad files and options fail before torch is imported

        if features is not None and inputs_:
            raise inputs.InputError("give sound files or --features, not both")
        if features is None and not inputs_:
            raise inputs.InputError("give at least one sound file (or --features F.npy)")
        opts = inputs.SoundOptions(start_s=start, duration_s=duration, gain=gain, mix=mix, mix_ratio=mix_ratio)
        opts.check()
        for path in [*(inputs_ or []), *([mix] if mix is not None else [])]:
            inputs.check_file(path)
        inputs.ensure_writable(out)
        heard = [inputs.listen(path, opts) for path in inputs_ or []]  # decoded before any model loads

        from pipeline import controls, generate as gen, sound2image

        files = sound2image.model_files(official, audio_encoder, generator)
        m = sound2image.load(files, _device(device, threads), audio=features is None)
        if features is not None:
            feats = gen.load_array(features, "features")
            z = gen.load_array(noise, "noise") if noise is not None else None
            paths = gen.write(gen.generate(m.G, feats, z, truncation=truncation, seed=seed, batch=batch), out)
            return f"generate: wrote {len(paths)} file(s) under {out}"
        z = controls.noise(m, n, noise, truncation, seed)
        paths = controls.generate_from_sounds(m, inputs.names(inputs_), heard, z, out, batch=max(1, batch),
                                              save_features=save_features)
        return f"generate: {len(inputs_)} sound(s) x {len(z)} image(s), wrote {len(paths)} file(s) under {out}"

    _guarded(body)


def interpolate(
    a: Annotated[Path, typer.Argument(help="start: a sound (audio or video file) or an image")],
    b: Annotated[Path, typer.Argument(help="end: a sound or an image")],
    out: Annotated[Path, typer.Option(help="the strip to write (.png): A, the steps, B")],
    steps: Annotated[int, typer.Option(help="images from A's feature to B's, both ends included")] = 8,
    mode: Annotated[str, typer.Option(help="slerp (on the unit sphere) | lerp (straight line)")] = "slerp",
    seed: Seed = 0,
    truncation: Truncation = None,
    start: Start = 0.0,
    duration: Duration = None,
    official: Official = None,
    generator: GeneratorOpt = None,
    audio_encoder: AudioEncoderOpt = None,
    image_encoder: ImageEncoderOpt = None,
    device: Device = "cpu",
    threads: Threads = 0,
) -> None:
    """Walk from the feature of A to that of B with one fixed noise (paper Fig. 6: sound to sound, image to sound)."""

    def body() -> str:
        from pipeline import inputs

        kinds = [inputs.check_file(p, ("audio", "image")) for p in (a, b)]
        if out.suffix.lower() != ".png":
            raise inputs.InputError(f"--out must be a .png file, got {out}")
        opts = inputs.SoundOptions(start_s=start, duration_s=duration)
        opts.check()
        inputs.ensure_writable(out)
        ends = [inputs.listen(p, opts) if k == "audio" else inputs.read_image(p) for p, k in zip((a, b), kinds)]

        from pipeline import controls, sound2image

        files = sound2image.model_files(official, audio_encoder, generator, image_encoder)
        m = sound2image.load(files, _device(device, threads), audio="audio" in kinds, image="image" in kinds)
        z = controls.noise(m, 1, None, truncation, seed)
        controls.interpolate(m, ends[0], ends[1], out, z, steps=steps, mode=mode)
        return f"interpolate: {kinds[0]} -> {kinds[1]}, {steps} steps ({mode}), wrote {out}"

    _guarded(body)


def edit(
    image: Annotated[Path, typer.Argument(help="the image to edit (png, jpg, ...)")],
    audio: Annotated[Path, typer.Argument(help="the sound whose louder-minus-quieter feature moves the image")],
    out: Annotated[Path, typer.Option(help="folder for target/before/after/strip .png and edit.json")],
    strength: Annotated[float, typer.Option(help="how far to move the unit feature along the direction")] = 1.0,
    audio2: Annotated[Path | None, typer.Option(help="move toward this sound instead: direction AUDIO2 - AUDIO")]
    = None,
    steps: Annotated[int, typer.Option(help="Adam steps of the inversion")] = 100,
    lr: Annotated[float, typer.Option(help="Adam learning rate of the inversion")] = 0.05,
    louder: Annotated[float, typer.Option(help="gain of the louder version of AUDIO")] = 2.0,
    quieter: Annotated[float, typer.Option(help="gain of the quieter version of AUDIO")] = 0.5,
    frames: Annotated[int, typer.Option(help="images in the strip, strength 0 .. --strength")] = 5,
    start: Start = 0.0,
    duration: Duration = None,
    official: Official = None,
    generator: GeneratorOpt = None,
    audio_encoder: AudioEncoderOpt = None,
    image_encoder: ImageEncoderOpt = None,
    device: Device = "cpu",
    threads: Threads = 0,
) -> None:
    """Invert IMAGE into the generator (report the reconstruction error), then move it with AUDIO (paper Fig. 7)."""

    def body() -> str:
        from pipeline import inputs

        inputs.check_file(image, ("image",))
        for path in [audio, *([audio2] if audio2 is not None else [])]:
            inputs.check_file(path)
        opts = inputs.SoundOptions(start_s=start, duration_s=duration)
        for o in (opts, inputs.SoundOptions(gain=louder), inputs.SoundOptions(gain=quieter)):
            o.check()
        inputs.ensure_writable(out)
        picture = inputs.read_image(image)
        sounds = inputs.edit_sounds(audio, audio2, opts, (louder, quieter))
        about = {"image": str(image), "audio": str(audio), "audio2": str(audio2) if audio2 else None,
                 "direction": "audio2 - audio" if audio2 else f"gain {louder:g} - gain {quieter:g}"}

        from pipeline import edit as editing, sound2image

        files = sound2image.model_files(official, audio_encoder, generator, image_encoder)
        m = sound2image.load(files, _device(device, threads), audio=True, image=True)
        r = editing.edit(m, picture, sounds, out, strength=strength, steps=steps, lr=lr, frames=frames, about=about)
        s, e = r["reconstruction"]["start"], r["reconstruction"]["end"]
        return (f"edit: reconstruction MSE {s['mse']:.4f} -> {e['mse']:.4f}, L1 {s['l1']:.4f} -> {e['l1']:.4f}, "
                f"PSNR {e['psnr_db']:.1f} dB after {steps} steps; direction norm {r['direction_norm']:.4f}; "
                f"wrote {out}")

    _guarded(body)


def register(app: typer.Typer) -> None:
    """Add the three commands to ``app``."""
    app.command("generate")(generate)
    app.command("interpolate")(interpolate)
    app.command("edit")(edit)
