"""Front-end parity: the student's log-mel equals torchaudio's MelSpectrogram + AmplitudeToDB formula
(reference computed here with numpy/librosa), the teacher's equals Whisper's feature extractor."""
import librosa
import numpy as np
import pytest
import torch

from eacap.features import STUDENT_FRONTEND, LogMel, WhisperLogMel, YamnetLogMel, centred_stft


def signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    chirp = np.sin(2 * np.pi * (200 + 1500 * t) * t)
    return (0.3 * chirp + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


def reference_logmel(x: np.ndarray, top_db: float = 120.0) -> np.ndarray:
    """torchaudio.transforms.MelSpectrogram(16000, n_fft=512, hop_length=160, n_mels=64) + AmplitudeToDB(top_db=120):
    centred reflect-padded periodic-Hann STFT, power 2, HTK mel filterbank without normalisation,
    10*log10(max(x,1e-10)), clamped to max - top_db."""
    window = np.hanning(513)[:-1]  # periodic Hann, as torch.hann_window
    padded = np.pad(x.astype(np.float64), 256, mode="reflect")
    n_frames = 1 + (padded.size - 512) // 160
    frames = np.stack([padded[i * 160: i * 160 + 512] * window for i in range(n_frames)], axis=1)
    power = np.abs(np.fft.rfft(frames, axis=0)) ** 2
    fb = librosa.filters.mel(sr=16000, n_fft=512, n_mels=64, fmin=0.0, fmax=8000.0, htk=True, norm=None)
    db = 10 * np.log10(np.maximum(fb @ power, 1e-10))
    return np.maximum(db, db.max() - top_db)


@pytest.mark.parametrize("seconds", [0.5, 3.3, 10.0])
def test_student_logmel_matches_torchaudio_formula(seconds):
    x = signal(seconds)
    ours, frames = LogMel(STUDENT_FRONTEND)(torch.from_numpy(x)[None], torch.tensor([x.size]))
    ref = reference_logmel(x)
    assert ours.shape == (1, 64, ref.shape[1]) and int(frames[0]) == ref.shape[1]
    assert np.abs(ours[0].numpy() - ref).max() < 1e-3  # dB; float32 STFT vs float64 reference


def test_student_logmel_top_db_clamps_quiet_bins():
    x = signal(2.0)
    x[:16000] = 0.0  # a digitally silent first second sits exactly top_db below the peak
    ours, _ = LogMel()(torch.from_numpy(x)[None], torch.tensor([x.size]))
    assert np.isclose(float(ours.min()), float(ours.max()) - 120.0, atol=1e-3)


def test_batched_features_match_single_clips():
    """Padding a short clip into a batch must not change its valid frames (per-clip top_db and max)."""
    long, short = signal(4.0, 1), signal(1.5, 2)
    batch = torch.zeros(2, long.size)
    batch[0], batch[1, : short.size] = torch.from_numpy(long), torch.from_numpy(short)
    lengths = torch.tensor([long.size, short.size])
    for frontend in (LogMel(), WhisperLogMel()):
        feats, frames = frontend(batch, lengths)
        alone, _ = frontend(torch.from_numpy(short)[None], torch.tensor([short.size]))
        n = int(frames[1])
        # the student's last frames see the batch's zero padding where a lone clip is reflected: compare the rest
        # (Whisper pads every clip with zeros, so its frames match all the way)
        edge = 2 if isinstance(frontend, LogMel) else 0
        assert torch.allclose(feats[1, :, : n - edge], alone[0, :, : n - edge], atol=1e-4)


def test_whisper_logmel_matches_transformers():
    transformers = pytest.importorskip("transformers")
    x = signal(30.0)  # exactly 480000 samples: the HF extractor pads nothing
    ours, frames = WhisperLogMel()(torch.from_numpy(x)[None], torch.tensor([x.size]))
    extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    ref = extractor(x, sampling_rate=16000, return_tensors="np").input_features
    assert ours.shape == ref.shape == (1, 80, 3000) and int(frames[0]) == 3000
    assert np.abs(ours.numpy() - ref).max() < 1e-4


def test_frontends_in_chunks_equal_one_pass(monkeypatch):
    """Large batches are computed FRONTEND_CHUNK clips at a time (cache-sized STFTs): the same features as one pass,
    to the bit."""
    import eacap.features as features
    rng = np.random.default_rng(0)
    batch = torch.from_numpy((0.1 * rng.standard_normal((5, 8000))).astype(np.float32))
    lengths = torch.tensor([8000, 6000, 8000, 3000, 7000])
    for frontend in (LogMel(), WhisperLogMel(), YamnetLogMel()):
        kind = frontend.config.kind
        monkeypatch.setitem(features.FRONTEND_CHUNK, kind, 8)
        whole, whole_frames = frontend(batch, lengths)
        for chunk in (1, 2, 4):
            monkeypatch.setitem(features.FRONTEND_CHUNK, kind, chunk)
            chunked, chunked_frames = frontend(batch, lengths)
            assert torch.equal(whole_frames, chunked_frames) and torch.equal(whole, chunked), (kind, chunk)


@pytest.mark.parametrize("frontend", [LogMel(STUDENT_FRONTEND), LogMel(LogMel().config), WhisperLogMel()],
                         ids=["student", "logmel-default", "whisper"])
def test_mel_power_by_bands_is_the_dense_product(frontend):
    """`MelPower` multiplies each band of filters by the bins it covers only: the bands hold every non-zero weight
    of the filterbank (rebuilt, it is the same matrix), and the mel power is the dense product to float rounding."""
    fb, mel = frontend.mel_fb, frontend.mel_power
    rebuilt = torch.zeros_like(fb)
    for index, (first, end, lo, hi) in enumerate(mel.bands):
        rebuilt[first:end, lo:hi] = getattr(mel, f"band{index}")[::2].t()
    assert torch.equal(rebuilt, fb)
    assert sum((end - first) * (hi - lo) for first, end, lo, hi in mel.bands) < fb.numel() / 2
    rng = np.random.default_rng(0)
    stft = torch.from_numpy(rng.standard_normal((3, 7, fb.shape[1], 2)).astype(np.float32))
    stft = torch.view_as_complex(stft)
    dense = fb @ (stft.abs() ** 2).transpose(1, 2)
    ours = mel(stft.clone())
    assert ours.shape == dense.shape == (3, fb.shape[0], 7)
    assert torch.allclose(ours, dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_fft, hop", [(1024, 640), (400, 160), (512, 160)])
def test_centred_stft_is_torch_stft_to_the_bit(n_fft, hop):
    """The reflection padding built by concatenation: torch.stft's numbers (center=True, reflect padding),
    frames-major, at every length from the shortest it reflects on and at whole and odd multiples of the hop."""
    window = torch.hann_window(n_fft)
    generator = torch.Generator().manual_seed(0)
    for length in [*range(n_fft // 2 + 1, n_fft // 2 + 3 * hop + 40, 13), 16000, 16000 + hop // 3, 160000]:
        x = torch.randn(2, length, generator=generator)
        expected = torch.stft(x, n_fft, hop, window=window, center=True, pad_mode="reflect", return_complex=True)
        assert torch.equal(centred_stft(x, n_fft, hop, window), expected.transpose(1, 2)), length
