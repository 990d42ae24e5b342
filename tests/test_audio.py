"""eacap.audio: every accepted input becomes float32 mono 16 kHz; every bad one, one clear AudioError."""

import struct

import numpy as np
import pytest
import soundfile as sf

from eacap import audio
from eacap.audio import MAX_SECONDS, SAMPLE_RATE, Audio, AudioError, load_audio


def tone(rate, seconds=1.0, freq=440.0, amplitude=0.5, channels=1):
    t = np.arange(round(rate * seconds)) / rate
    x = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.repeat(x[:, None], channels, axis=1)


def peak_hz(waveform):
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return np.argmax(spectrum) * SAMPLE_RATE / len(waveform)


def assert_tone(result: Audio, seconds=1.0, freq=440.0, amplitude=0.5, level_tol=0.02):
    """The result is a well-formed Audio holding the tone: right pitch, length and level."""
    w = result.waveform
    assert w.dtype == np.float32 and w.ndim == 1 and w.flags.c_contiguous
    assert result.sample_rate == SAMPLE_RATE
    assert abs(len(w) - seconds * SAMPLE_RATE) <= 1  # duration kept within one sample
    assert result.duration == pytest.approx(len(w) / SAMPLE_RATE)
    assert abs(peak_hz(w) - freq) <= 1.0  # 1 s at 16 kHz gives 1 Hz bins
    middle = w[len(w) // 4 : -len(w) // 4]  # away from resampler edge effects
    assert np.abs(middle).max() == pytest.approx(amplitude, abs=level_tol)
    assert result.warnings == []


# --- files -----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "ext, fmt, subtype, level_tol",
    [
        ("wav", "WAV", "PCM_16", 0.002),
        ("wav", "WAV", "FLOAT", 0.002),
        ("flac", "FLAC", "PCM_24", 0.002),
        ("ogg", "OGG", "VORBIS", 0.03),
        ("mp3", "MP3", "MPEG_LAYER_III", 0.05),
    ],
)
def test_formats(tmp_path, ext, fmt, subtype, level_tol):
    if fmt not in sf.available_formats():  # libsndfile < 1.1 cannot write (or read) MP3
        pytest.skip(f"this libsndfile ({sf.__libsndfile_version__}) has no {fmt} support")
    path = tmp_path / f"tone.{ext}"
    sf.write(path, tone(44100), 44100, format=fmt, subtype=subtype)
    result = load_audio(path)
    # Lossy codecs add a little encoder delay, so compare pitch and level, with length to 0.1 s.
    seconds = len(result.waveform) / SAMPLE_RATE
    assert seconds == pytest.approx(1.0, abs=0.1)
    assert_tone(result, seconds=seconds, level_tol=level_tol)
    assert result.name == f"tone.{ext}"
    assert (result.source_rate, result.source_channels) == (44100, 1)


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 96000, 192000])
def test_rates_resampled_to_16k(tmp_path, rate):
    path = tmp_path / "tone.wav"
    sf.write(path, tone(rate), rate, subtype="FLOAT")
    result = load_audio(str(path))
    assert_tone(result)
    assert result.source_rate == rate
    assert result.source_duration == pytest.approx(1.0)


def test_16k_float_file_is_passed_through_exactly(tmp_path):
    x = tone(SAMPLE_RATE, amplitude=3.0)  # over full scale: levels are kept, not normalised
    sf.write(tmp_path / "loud.wav", x, SAMPLE_RATE, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "loud.wav").waveform, x)


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_file_is_averaged(tmp_path, channels):
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.5, 0.5, size=(SAMPLE_RATE, channels)).astype(np.float32)
    sf.write(tmp_path / "multi.wav", x, SAMPLE_RATE, subtype="FLOAT")
    result = load_audio(tmp_path / "multi.wav")
    assert result.source_channels == channels
    np.testing.assert_allclose(result.waveform, x.mean(axis=1), atol=1e-7)


def test_stereo_tone_keeps_level(tmp_path):
    sf.write(tmp_path / "stereo.flac", tone(48000, channels=2), 48000)
    result = load_audio(tmp_path / "stereo.flac")
    assert_tone(result, level_tol=0.002)
    assert result.source_channels == 2


def test_bytes(tmp_path):
    path = tmp_path / "tone.ogg"
    sf.write(path, tone(22050, channels=2), 22050)
    data = path.read_bytes()
    for source in (data, bytearray(data), memoryview(data)):
        result = load_audio(source)
        assert_tone(result, level_tol=0.03)
        assert result.name == "<bytes>"
    assert load_audio(data, name="upload.ogg").name == "upload.ogg"


def test_long_file_is_cut_and_only_the_window_is_read(tmp_path, monkeypatch):
    rate = 8000
    sf.write(tmp_path / "long.wav", tone(rate, seconds=45.0), rate)
    requested = []
    real_read = sf.SoundFile.read

    def spy_read(self, frames=-1, **kwargs):
        requested.append(frames)
        return real_read(self, frames, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy_read)
    result = load_audio(tmp_path / "long.wav")
    assert sum(requested) == round(MAX_SECONDS * rate)  # read in blocks, but never past the window
    assert result.duration == pytest.approx(MAX_SECONDS, abs=1 / SAMPLE_RATE)
    assert result.source_duration == pytest.approx(45.0)
    assert result.warnings == [
        "cut to the first 30.0 s of 45.0 s (the model's window); caption the whole recording as a timeline "
        "(CLI `caption --timeline`, the app's Timeline)"
    ]


def test_max_seconds_is_the_window(tmp_path):
    sf.write(tmp_path / "tone.wav", tone(SAMPLE_RATE, seconds=3.0), SAMPLE_RATE)
    result = load_audio(tmp_path / "tone.wav", max_seconds=2.0)
    assert len(result.waveform) == 2 * SAMPLE_RATE
    assert "cut to the first 2.0 s of 3.0 s" in result.warnings[0]
    with pytest.raises(ValueError, match="max_seconds"):
        load_audio(tmp_path / "tone.wav", max_seconds=0)


def write_sparse_wav(path, seconds, rate=8000):
    """A valid 16-bit PCM WAV of `seconds` of silence; sparse on disk, so hours cost nothing."""
    data_bytes = round(seconds * rate) * 2
    header = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
    header += b"data" + struct.pack("<I", data_bytes)
    with open(path, "wb") as f:
        f.write(header)
        f.truncate(len(header) + data_bytes)


def test_very_long_file_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "two_hours.wav"
    write_sparse_wav(path, seconds=2 * 3600)
    assert sf.info(path).duration == pytest.approx(2 * 3600)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the file was decoded before being refused")

    monkeypatch.setattr(sf.SoundFile, "read", no_decoding)
    with pytest.raises(AudioError, match=r"two_hours\.wav: 120 min of audio is over the 60 min limit; trim it"):
        load_audio(path)


# --- arrays, tensors and Gradio tuples ---------------------------------------------------------

def test_array_channel_axis_is_the_smaller_dimension():
    x = tone(22050, channels=2)
    x[:, 1] *= 0.5  # channels differ, so averaging over the wrong axis would show
    samples_first = load_audio(x, 22050)
    channels_first = load_audio(x.T, 22050)
    np.testing.assert_array_equal(channels_first.waveform, samples_first.waveform)
    assert samples_first.source_channels == channels_first.source_channels == 2
    assert samples_first.name == "<array>"
    assert abs(peak_hz(samples_first.waveform) - 440) <= 1
    assert np.abs(samples_first.waveform[4000:-4000]).max() == pytest.approx(0.375, abs=0.005)  # (0.5 + 0.25) / 2
    assert_tone(load_audio(x[:, :1].T, 22050))  # (1, samples)
    assert load_audio(np.full((32, 1600), 0.1, dtype=np.float32), 16000).source_channels == 32


def test_float64_and_float16_arrays():
    assert_tone(load_audio(tone(48000).astype(np.float64), 48000.0))
    assert_tone(load_audio(tone(SAMPLE_RATE).astype(np.float16), SAMPLE_RATE), level_tol=0.002)


@pytest.mark.parametrize(
    "dtype, scale, offset",
    [(np.int16, 2**15, 0), (np.int32, 2**31, 0), (np.int8, 2**7, 0), (np.uint8, 2**7, 128)],
)
def test_gradio_tuple_integer_pcm(dtype, scale, offset):
    stereo = tone(44100, channels=2)  # Gradio gives (samples, channels)
    pcm = np.round(stereo * (scale - 1) + offset).astype(dtype)
    result = load_audio((44100, pcm))
    assert_tone(result, level_tol=0.02 if dtype in (np.int8, np.uint8) else 0.002)
    assert (result.source_rate, result.source_channels) == (44100, 2)


def test_librosa_style_tuple_and_matching_rate():
    assert_tone(load_audio((tone(22050), 22050)))
    assert_tone(load_audio((22050, tone(22050)), 22050))


def test_torch_tensor():
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(tone(32000, channels=2).T.copy()).requires_grad_()  # torch layout: (channels, samples)
    assert_tone(load_audio(x, 32000))
    assert_tone(load_audio(x.to(torch.bfloat16), 32000), level_tol=0.01)
    assert_tone(load_audio(torch.from_numpy(np.round(tone(16000) * 32767).astype(np.int16)), 16000), level_tol=0.002)


def test_long_array_is_cut_and_long_refusal_needs_no_memory():
    result = load_audio(tone(8000, seconds=45.0), 8000)
    assert result.duration == pytest.approx(MAX_SECONDS)
    assert result.warnings[0].startswith("cut to the first 30.0 s of 45.0 s")
    # A zero-stride view: 2 h of "samples" in 4 bytes. Refused from its shape alone.
    two_hours = np.broadcast_to(np.float32(0.1), (2 * 3600 * 8000,))
    with pytest.raises(AudioError, match="120 min of audio is over the 60 min limit"):
        load_audio(two_hours, 8000)


# --- silence: a warning, not an error ----------------------------------------------------------

@pytest.mark.parametrize("level", [0.0, 1e-6])
def test_silence_is_a_warning(level):
    result = load_audio(np.full(8000, level, dtype=np.float32), 8000)
    assert len(result.waveform) == SAMPLE_RATE
    (warning,) = result.warnings
    assert "the audio is silent" in warning and "captioned as silence" in warning


def test_out_of_phase_stereo_is_silent_after_downmix():
    x = tone(SAMPLE_RATE)
    assert "silent" in load_audio(np.stack([x, -x]), SAMPLE_RATE).warnings[0]


def test_quiet_but_not_silent_has_no_warning():
    assert load_audio(tone(SAMPLE_RATE, amplitude=1e-3), SAMPLE_RATE).warnings == []


# --- every bad input: one exception type, a message naming the input and the fix ---------------

def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"nope\.wav: no such file: .*nope\.wav; check the path"):
        load_audio(tmp_path / "nope.wav")


def test_directory(tmp_path):
    with pytest.raises(AudioError, match="is not a file"):
        load_audio(tmp_path)


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    expected = r"notes\.wav: not readable as audio \(Format not recognised\); convert it to WAV, FLAC, OGG or MP3"
    with pytest.raises(AudioError, match=expected):
        load_audio(path)


def test_garbage_bytes():
    with pytest.raises(AudioError, match=r"<bytes>: not readable as audio .*convert it to WAV"):
        load_audio(b"\x00\x01garbage" * 100)


def test_truncated_flac(tmp_path):
    path = tmp_path / "cut.flac"
    sf.write(path, np.random.default_rng(0).normal(0, 0.1, 44100).astype(np.float32), 44100)
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(AudioError, match=r"cut\.flac: not readable as audio"):
        load_audio(path)


def test_empty_file_and_bytes(tmp_path):
    (tmp_path / "empty.wav").touch()
    with pytest.raises(AudioError, match=r"empty\.wav: the file is empty \(0 bytes\)"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match=r"<bytes>: the data is empty"):
        load_audio(b"")


def test_header_only_wav(tmp_path):
    sf.write(tmp_path / "nothing.wav", np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"nothing\.wav: there are no samples in it"):
        load_audio(tmp_path / "nothing.wav")


@pytest.mark.parametrize("shape", [(0,), (0, 2), (2, 0)])
def test_empty_array(shape):
    with pytest.raises(AudioError, match=r"<array>: the array is empty"):
        load_audio(np.zeros(shape, dtype=np.float32), 16000)


def test_too_short():
    with pytest.raises(AudioError, match=r"<array>: only 0.05 s of audio; record at least 0.1 s"):
        load_audio(tone(16000, seconds=0.05), 16000)


def test_too_short_file(tmp_path):
    sf.write(tmp_path / "blip.wav", tone(44100, seconds=0.05), 44100)
    with pytest.raises(AudioError, match=r"blip\.wav: only 0.05 s"):
        load_audio(tmp_path / "blip.wav")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(bad):
    x = tone(16000)
    x[1234] = bad
    with pytest.raises(AudioError, match="NaN or infinite samples"):
        load_audio(x, 16000)


def test_non_finite_samples_in_float_wav(tmp_path):
    x = tone(16000)
    x[10] = np.nan
    sf.write(tmp_path / "broken.wav", x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"broken\.wav: it contains NaN or infinite samples"):
        load_audio(tmp_path / "broken.wav")


@pytest.mark.parametrize("rate", [4000, 400000, 16, 0, -16000])
def test_absurd_rate(rate):
    with pytest.raises(AudioError, match=rf"sample rate {rate} Hz is outside the supported 8000-192000 Hz"):
        load_audio(tone(16000), rate)


@pytest.mark.parametrize("rate", [4000, 400000])
def test_absurd_rate_in_file_header(tmp_path, rate):
    sf.write(tmp_path / "odd.wav", np.zeros(rate, dtype=np.float32), rate)
    with pytest.raises(AudioError, match=rf"odd\.wav: sample rate {rate} Hz is outside"):
        load_audio(tmp_path / "odd.wav")


@pytest.mark.parametrize("rate", [44100.5, "44100", True, None])
def test_rate_not_a_whole_number(rate):
    match = "has no sample rate" if rate is None else "not a whole number of Hz"
    with pytest.raises(AudioError, match=match):
        load_audio(tone(16000), rate)


@pytest.mark.parametrize("shape", [(2, 16000, 1), (1, 1, 16000), (), (40, 16000 * 50 // 40)])
def test_absurd_shapes(shape):
    expected = rf"<array>: an array of shape \({', '.join(map(str, shape))},?\) is not one clip"
    with pytest.raises(AudioError, match=expected):
        load_audio(np.full(shape, 0.1, dtype=np.float32), 16000)


def test_too_many_channels_in_file(tmp_path):
    sf.write(tmp_path / "many.wav", np.full((1600, 40), 0.1, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"many\.wav: 40 channels is more than 32; downmix it first") as error:
        load_audio(tmp_path / "many.wav")
    assert "to stereo or mono" in str(error.value)
    with pytest.raises(AudioError, match="40 channels is more than 32"):
        audio.open_stream(tmp_path / "many.wav")
    sf.write(tmp_path / "32.wav", np.full((1600, 32), 0.1, dtype=np.float32), 16000)
    assert load_audio(tmp_path / "32.wav").source_channels == 32  # the limit itself is accepted


def test_memory_follows_one_channel_not_all_of_them(tmp_path):
    """A file is decoded a block at a time and each block downmixed at once: 32 channels at 192 kHz must not hold all
    its channels in memory (the whole 10 s would be 246 MB of float32), and the result is the whole-file downmix."""
    import tracemalloc

    import soxr

    rate, channels, seconds = 192000, audio.MAX_CHANNELS, 10
    path = tmp_path / "many.wav"
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as f:  # WAV: encoding Vorbis this big takes 30 s
        for second in range(seconds):
            t = second + np.arange(rate)[:, None] / rate
            f.write((0.5 * np.sin(2 * np.pi * (100.0 + 37.0 * np.arange(channels)) * t)).astype(np.float32))
    all_channels = channels * rate * seconds * 4  # bytes of every channel as float32

    tracemalloc.start()
    try:
        result = load_audio(path)
        _, load_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with audio.open_stream(path) as stream:
            streamed = stream.read(0.0, seconds)
        _, stream_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert load_peak < all_channels / 4, f"load_audio peaked at {load_peak / 2**20:.0f} MiB"
    assert stream_peak < all_channels / 4, f"AudioStream.read peaked at {stream_peak / 2**20:.0f} MiB"

    whole = sf.read(path, dtype="float32", always_2d=True)[0].mean(axis=1)  # the old way: every channel, then mix
    expected = soxr.resample(whole, rate, SAMPLE_RATE, quality="HQ")
    assert result.source_channels == channels and result.source_rate == rate
    np.testing.assert_allclose(result.waveform, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(streamed, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.complex64, bool])
def test_unsupported_sample_types(dtype):
    with pytest.raises(AudioError, match="are not audio; use float, int16"):
        load_audio(np.ones(16000, dtype=dtype), 16000)


@pytest.mark.parametrize("source", [None, 3.0, [0.1] * 16000, {"path": "x.wav"}])
def test_unsupported_inputs(source):
    with pytest.raises(AudioError, match="no audio was given|cannot load a"):
        load_audio(source, 16000)


def test_rate_conflicts(tmp_path):
    sf.write(tmp_path / "tone.wav", tone(44100), 44100)
    assert_tone(load_audio(tmp_path / "tone.wav", 44100), level_tol=0.002)
    with pytest.raises(AudioError, match=r"tone\.wav: sample_rate=16000 was given, but the file says 44100 Hz"):
        load_audio(tmp_path / "tone.wav", 16000)
    with pytest.raises(AudioError, match="disagrees with the tuple's rate 44100"):
        load_audio((44100, tone(44100)), 16000)
    with pytest.raises(AudioError, match=r"a tuple must be \(sample_rate, array\)"):
        load_audio((44100, tone(44100), "extra"))


def test_name_overrides_messages():
    with pytest.raises(AudioError, match=r"^microphone: only"):
        load_audio(tone(16000, seconds=0.01), 16000, name="microphone")


def test_audio_error_is_a_value_error():
    assert issubclass(AudioError, ValueError)
    assert audio.SAMPLE_RATE == 16000 and audio.MIN_SECONDS == 0.1 and audio.MAX_SECONDS == 30.0
