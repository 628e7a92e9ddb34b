import torch

from ganfuse.data.digits import DigitsDataset
from ganfuse.data.sampler import EpochBatchSampler


def test_digits_are_real_and_scaled():
    ds = DigitsDataset()
    assert len(ds) == 1797 and ds.channels == 1 and ds.image_size == 32 and ds.num_classes == 10
    assert ds.images.shape == (1797, 1, 32, 32)
    assert ds.images.min() == -1.0 and ds.images.max() <= 1.0 and ds.images.max() > 0.9
    counts = torch.bincount(ds.labels, minlength=10)
    assert counts.min() >= 170  # every digit is present, roughly balanced
    # background is dark: the corners of every image are at the minimum
    assert (ds.images[:, 0, 0, 0] < -0.9).float().mean() > 0.95


def test_sampler_is_deterministic_and_resumable():
    a = EpochBatchSampler(100, 32, seed=5)
    straight = [a.next_indices() for _ in range(7)]  # crosses epochs (3 batches per epoch)
    b = EpochBatchSampler(100, 32, seed=5)
    first = [b.next_indices() for _ in range(4)]
    c = EpochBatchSampler(100, 32, seed=0)
    c.load_state_dict(b.state_dict())
    rest = [c.next_indices() for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(straight, first + rest, strict=True))
    epoch0 = torch.cat(straight[:3])
    assert len(set(epoch0.tolist())) == 96  # no repeats within an epoch
