"""Word-level text-to-image networks for several objects (``model.arch: t2i-words``).

A sentence vector cannot keep "a red circle and a blue square" apart from "a blue circle and a
red square" unless the encoder happens to; these networks read the caption's *tokens* (the small
word encoder's bidirectional GRU outputs, so "circle" already knows it follows "red") through
cross-attention, in the manner of AttnGAN / XMC-GAN, and build the image from objects.

G, :class:`SlotGenerator` (object slots that attend to words, then a layout, then pixels):

1. ``K`` learned slot queries read the tokens: two rounds of (cross-attention slots -> tokens,
   self-attention among slots, MLP). Each slot becomes one object the caption names, or nothing.
2. Layout: per-slot noise is added and two self-attention layers let the slots agree on places
   ("left of" is a fact about two slots); a head gives each slot a centre in [0, 1]^2, a scale and
   a presence gate. The noise is what decides positions the caption leaves open.
3. Layers, in the manner of layered GANs (LR-GAN, Yang et al. 2017) and slot-attention decoders
   (Locatello et al. 2020): at every pixel a small MLP of the pixel's offset from a slot's centre
   (divided by the slot's scale) and of the slot's shape code gives the slot's mask logit, plus
   its presence logit; a softmax over the slots and the background shares every pixel out, and
   the image is the share-weighted sum of each slot's colour and a smooth background field from
   the noise. D's gradient reaches each object's colour, mask and place directly, so objects
   appear within the first hundreds of steps, and the masks are full resolution, so edges are
   sharp. ``model.slot_mask=sprite`` replaces the MLP by a grid of mask logits decoded from the
   slot's state and sampled at the offset (``mlp+sprite`` sums both; benchmarks/scenes_t2i.md,
   "Teaching shape").

D, :class:`WordDiscriminator`: residual down-sampling to an 8x8 map of regions (with a learned
position embedding) and on to 4x4. Its logit sums an unconditional term, a projection of the
pooled caption (Miyato & Koyama 2018), and a word-region matching term: every word attends over
the regions, a self-attention layer among the words combines what they found (a relation word
compares the places its two objects were found at), and each word scores its evidence; the
scores are averaged over the real (non-padding) words. With ``text.object_weight`` D also holds
an object discriminator (:class:`ObjectHead`): windows around objects judged against object
descriptions (``ganfuse.train.objects``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ganfuse.config import MASK_RESOLUTIONS, SLOT_MASKS
from ganfuse.data.scenes import GAP_AT_64, MAX_OBJECTS, RELATION_AXES, RELATION_MARGIN_AT_64
from ganfuse.errors import ConfigError
from ganfuse.models.discriminator import DiscriminatorOutput, TextDiscriminator
from ganfuse.models.fusion.base import masked_mean
from ganfuse.models.layers import maybe_spectral_norm
from ganfuse.models.t2i import DownBlock, check_text_request
from ganfuse.text.prompts import TextSpec, TokenConditioner

TOKEN_DIM = 128  # the small encoder's token features: a 64-d bidirectional GRU
MASK_PEAK = 3.0  # a present slot's mask logit at its centre, against the background's 0
MASK_RESHAPE = 4.0  # the mask MLP changes a layer's logit by at most this much
POSITION_NOISE = 1.5  # how far (in logits of the centre) a slot's own noise moves it
OFFSET_RANGE = 6.0  # the mask MLP reads offsets clamped to +-this many units
SPRITE = 24  # cells per side of a sprite mask (model.slot_mask=sprite): 1 px each at 64x64, scale 1
SPRITE_RANGE = 4.0  # a sprite spans offsets of +-this many units (the blob's edge is at 2.45)
SEPARATION_GAP = GAP_AT_64 / 64  # model.slot_separation: the dataset's gap between objects (canvas units)
SEPARATION_ROUNDS = 10  # model.slot_separation: rounds of pushing overlapping slots apart
# G's layout rounds treat a slot as absent below this gate and as present above the next, ramping
# between (a trained G hides 99.9% of its absent slots below 0.02 and shows 95% of its objects
# with gates above 0.17)
ABSENT_GATE, PRESENT_GATE = 0.02, 0.1
# model.slot_relations: what G's pair head says of an ordered pair of slots (i, j): "i <relation> j"
# or nothing; and the centre distance it keeps along the relation's axis (canvas units): the
# dataset's margin plus 2 pixels, as a drawn object's parsed centre is a pixel or two off its slot's
PAIR_RELATIONS: tuple[str, ...] = ("none", *RELATION_AXES)
RELATION_KEEP = (RELATION_MARGIN_AT_64 + 2.0) / 64
OBJECT_WINDOW = 24 / 64  # the object head's window: a large object (18 px at 64) with a margin


def masked_attention(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                     mask: torch.Tensor | None = None, heads: int = 4) -> torch.Tensor:
    """Multi-head scaled dot-product attention ``(B, Q, D), (B, T, D), (B, T, Dv) -> (B, Q, Dv)``.

    ``mask (B, T)`` bool, True at keys that take part (padding tokens are False and get no
    weight); every row must keep at least one key. ``D`` and ``Dv`` must divide by ``heads``.
    """
    b, q, d = queries.shape
    t, dv = keys.shape[1], values.shape[2]

    def split(x: torch.Tensor, n: int, width: int) -> torch.Tensor:
        return x.reshape(b, n, heads, width // heads).transpose(1, 2)

    attn_mask = None if mask is None else mask[:, None, None, :]
    out = F.scaled_dot_product_attention(split(queries, q, d), split(keys, t, d), split(values, t, dv),
                                         attn_mask=attn_mask)
    return out.transpose(1, 2).reshape(b, q, dv)


class AttentionLayer(nn.Module):
    """Pre-norm residual attention ``x (B, Q, D) += W_o attn(LN(x), context)`` where ``context``
    ``(B, T, Dc)`` is ``x`` itself (self-attention) or other features (cross-attention)."""

    def __init__(self, dim: int, context_dim: int | None = None, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        k, v = self.kv(h if context is None else context).chunk(2, dim=-1)
        return x + self.out(masked_attention(self.q(h), k, v, mask, self.heads))


class FeedForward(nn.Module):
    """Pre-norm residual MLP ``x (B, Q, D) += MLP(LN(x))``."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or 2 * dim
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


def grid_coordinates(size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Cell centres of a ``size x size`` grid in [0, 1]: ``(size * size, 2)`` as (x, y), row-major."""
    axis = (torch.arange(size, device=device, dtype=dtype) + 0.5) / size
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([x.flatten(), y.flatten()], dim=1)


class SlotGenerator(nn.Module):
    """``z (B, z_dim), ids (B, T) int64 -> images (B, 3, S, S)``: object slots read the caption's
    words, take places from the noise, and are composited as layers over a background (see the
    module docstring). In eval mode the output is clamped to [-1, 1]; in train mode it is the
    unbounded linear output D judges.

    ``layout(z, ids)`` returns the slots' centres ``(B, K, 2)`` in [0, 1], scales ``(B, K)`` and
    gates ``(B, K)`` in (0, 1), for inspection and tests.
    """

    def __init__(self, spec: TextSpec, z_dim: int = 64, image_size: int = 64, width: int = 64,
                 cond_dim: int = 128, slots: int = 4, channels: int = 3, mask_hidden: int = 32,
                 mask: str = "mlp", sprite_gain: float = 0.1, mask_resolution: str = "half",
                 separate: bool = False, shape_from_words: bool = False, relations: bool = False,
                 in_canvas: bool = False, reach: float = 1.0, presence: bool = False,
                 outline_supervised: bool = False, relation_reads_words: bool = False):
        super().__init__()
        if mask not in SLOT_MASKS:
            raise ConfigError(f"model.slot_mask must be one of {', '.join(SLOT_MASKS)}, got {mask!r}")
        if spec.kind != "tokens":
            raise ConfigError("model.arch=t2i-words reads words: set text.encoder=small")
        if image_size < 16 or image_size & (image_size - 1):
            raise ConfigError(f"t2i-words needs a power-of-two image size >= 16, got {image_size}")
        if z_dim < 2 * slots:
            raise ConfigError(f"t2i-words needs model.z_dim >= 2 x text.slots ({2 * slots}): each slot "
                              f"takes two noise numbers for its place; got {z_dim}")
        self.z_dim, self.image_size, self.slots = z_dim, image_size, slots
        dim = cond_dim
        self.text = TokenConditioner(spec, cond_dim)
        self.token_proj = nn.Linear(TOKEN_DIM, dim)
        self.queries = nn.Parameter(torch.randn(slots, dim) * 0.5)
        self.read = nn.ModuleList()
        for _ in range(2):
            self.read.extend([AttentionLayer(dim, dim), AttentionLayer(dim), FeedForward(dim)])
        self.slot_noise = nn.Linear(z_dim, slots * dim)
        self.arrange = nn.ModuleList([AttentionLayer(dim), FeedForward(dim), AttentionLayer(dim), FeedForward(dim)])
        self.place = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4))  # x, y, log-scale, gate logit
        self.mask_kind = mask
        self.separate = separate  # overlapping present slots pushed apart (model.slot_separation)
        self.shape_from_words = shape_from_words  # outline and colour before the noise (model.shape_from_words)
        self.in_canvas = in_canvas  # present slots kept wholly inside the canvas (model.slot_in_canvas)
        self.presence = presence  # layout pushes at full strength for every shown slot (model.slot_presence)
        # the outline decoder learns from the slot supervision alone (model.outline_supervised)
        self.outline_supervised = outline_supervised
        if not reach > 0:
            raise ConfigError(f"model.slot_reach must be > 0, got {reach}")
        self.reach = reach  # a slot's drawn half-extent in blob radii, for the two above (model.slot_reach)
        self.relate = None  # model.slot_relations: the pair head (see pair_relations)
        self.relation_reads_words = relation_reads_words  # its loss reaches the words (model.relation_reads_words)
        if relations:
            # its own reading of the words, from the slots' read states; nothing of it flows back
            # into the words or the slots, whose outlines and colours a strong pair term distorted
            # (seen binding 84% -> 51% in 30 minutes)
            self.relate_read = AttentionLayer(dim, dim)
            self.relate = nn.Sequential(nn.LayerNorm(2 * dim), nn.Linear(2 * dim, dim), nn.LeakyReLU(0.2),
                                        nn.Linear(dim, len(PAIR_RELATIONS)))
            with torch.no_grad():  # starts sure of "none": no pushes until the words teach it
                self.relate[-1].weight.mul_(0.1)
                self.relate[-1].bias.copy_(torch.tensor([4.0] + [0.0] * len(RELATION_AXES)))
        self.last_relations: torch.Tensor | None = None
        # text.spread_weight: training forwards also place the slots with the next image's noise
        self.spread = False
        self.last_spread: tuple[torch.Tensor, ...] | None = None
        self._words: tuple[torch.Tensor, torch.Tensor] | None = None  # the latest words read (_states)
        self.sprite_gain = sprite_gain  # the sprite decoder's output scale (model.sprite_gain)
        if mask_resolution not in MASK_RESOLUTIONS:
            raise ConfigError(f"model.mask_resolution must be one of {', '.join(MASK_RESOLUTIONS)}, "
                              f"got {mask_resolution!r}")
        self.mask_resolution = mask_resolution  # where the masks are computed (see masks())
        if "mlp" in mask:
            # each layer's mask: an MLP of a pixel's offset from the slot's centre, biased by the
            # slot's shape code; its last layer starts at zero, so every layer starts as a round blob
            self.shape_code = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, mask_hidden))
            self.mask_offset = nn.Linear(3, mask_hidden)  # (dx, dy, dx^2 + dy^2) -> hidden
            self.mask_out = nn.Linear(mask_hidden, 1)
            nn.init.zeros_(self.mask_out.weight)
            nn.init.zeros_(self.mask_out.bias)
        if "sprite" in mask:
            # each layer's mask: a SPRITE x SPRITE grid of logits decoded from the slot's state,
            # spanning offsets of +-SPRITE_RANGE, sampled bilinearly at each pixel's offset; every
            # cell is its own output, so an outline's corner or point is one local change (an MLP of
            # the offset changes half-planes at once). Starts at zero: a round blob. Alone it only
            # carves: with growth allowed (+-4 anywhere in +-6 units, or +2) the layers grew into
            # large polygons that tiled the background by step 400
            self.sprite = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, SPRITE * SPRITE))
            nn.init.zeros_(self.sprite[1].weight)
            nn.init.zeros_(self.sprite[1].bias)
        self.colour = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, channels))
        # the background: a smooth field from the noise, a 4x4 colour map (from an MLP of z)
        # up-sampled bilinearly. Convolutional up-sampling painted fine textures that no real
        # background has, which D spotted at once (it told every fake apart by step 200 and the
        # objects faded out)
        self.background_map = nn.Sequential(nn.Linear(z_dim, width), nn.LeakyReLU(0.2),
                                            nn.Linear(width, channels * 16))
        # offsets are in units of ``radius`` times the slot's scale; a new slot's blob then ends
        # about 7 pixels from its centre at 64x64, between the two object sizes
        self.radius = 7.0 / 64 / math.sqrt(2 * MASK_PEAK)
        self.slot_window = 0  # pixels per side of the windows ``last_slots`` keeps (0: none)
        self.last_slots: tuple[torch.Tensor, ...] | None = None

    def outline_parameters(self) -> list[nn.Parameter]:
        """The outline decoder's parameters: what turns a slot's state into the reshaping of its
        round blob (the mask MLP and the sprite decoder), for ``train.lr_outline``."""
        parts = [getattr(self, name, None) for name in ("shape_code", "mask_offset", "mask_out", "sprite")]
        return [p for part in parts if part is not None for p in part.parameters()]

    def slot_states(self, z: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The slots after reading the words and arranging with the noise: ``(B, K, D)``."""
        return self._states(z, ids)[1]

    def _states(self, z: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The slots after reading the words, and after arranging them with the noise: ``(B, K, D)``
        each. Keeps the projected words and their mask in ``_words`` for the pair head."""
        words = self.text.features(ids)
        tokens = self.token_proj(words.tokens)
        self._words = (tokens, words.mask)
        s = self.queries.expand(z.shape[0], -1, -1)
        for cross, self_attn, mlp in zip(self.read[0::3], self.read[1::3], self.read[2::3], strict=True):
            s = mlp(self_attn(cross(s, tokens, words.mask)))
        return s, self._with_noise(s, z)

    def _with_noise(self, read: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The slots after reading the words (``read``), arranged with the noise ``z``."""
        s = read + self.slot_noise(z).view(z.shape[0], self.slots, -1)
        for layer in self.arrange:
            s = layer(s)
        return s

    def layout(self, z: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        read, s = self._states(z, ids)
        return self._layout(s, z, read)[:3]

    def pair_relations(self, read: torch.Tensor) -> torch.Tensor:
        """``model.slot_relations``: the pair head's logits ``(B, K, K, len(PAIR_RELATIONS))`` over
        what slot i is of slot j ("none", or i left of / right of / above / below j), from the two
        slots' states after reading the words (``read (B, K, D)``) and the words again by its own
        attention (the words of the latest ``_states`` call), so from the caption alone; its loss
        trains only the head, or the head and the words with ``model.relation_reads_words`` (never
        the slots' states)."""
        k = read.shape[1]
        tokens, mask = self._words
        if not self.relation_reads_words:
            tokens = tokens.detach()
        read = self.relate_read(read.detach(), tokens, mask)
        pairs = torch.cat([read[:, :, None].expand(-1, -1, k, -1), read[:, None].expand(-1, k, -1, -1)], dim=-1)
        return self.relate(pairs)

    def _layout(self, s: torch.Tensor, z: torch.Tensor | None = None, read: torch.Tensor | None = None):
        p = self.place(s)
        xy = p[..., :2]
        if z is not None:
            # each slot's own two noise numbers move it directly, so where the caption leaves a
            # place open the noise decides it (the slots see the same noise through their states and
            # learn to correct it where a relation fixes the order)
            xy = xy + POSITION_NOISE * z[:, : 2 * self.slots].view(z.shape[0], self.slots, 2)
        centres = torch.sigmoid(xy)
        scales = torch.exp(0.5 * torch.tanh(p[..., 2]))
        gates = torch.sigmoid(p[..., 3])
        self.last_relations = None
        relations = None
        if self.relate is not None and read is not None:
            logits = self.pair_relations(read)
            self.last_relations = logits if self.training else None  # for the objective's pair term
            relations = torch.softmax(logits.float(), dim=-1)[..., 1:].to(centres.dtype)
        if self.separate or self.in_canvas or relations is not None:
            # each slot's drawn half-extent (B, K) in canvas units: its blob's radius times the reach
            edge = self.reach * self.radius * math.sqrt(2 * MASK_PEAK) * scales
            centres = self._arrange(centres, edge, gates, relations)
        return centres, scales, gates, s

    def _arrange(self, centres: torch.Tensor, edge: torch.Tensor, gates: torch.Tensor,
                 relations: torch.Tensor | None) -> torch.Tensor:
        """Where the slots go, in SEPARATION_ROUNDS differentiable rounds; each round, as asked:

        - ``model.slot_relations``: ``relations (B, K, K, 4)`` are the pair head's probabilities
          that slot i is left of, right of, above, below slot j. Along x, the pair's intent is how
          much more "i left of j" the head says than "i right of j", from both of the pair's
          orders (``(p_left - p_right)(i, j) - (p_left - p_right)(j, i)``, halved: from -1 to 1);
          a pair is pushed apart along x, half each, until the one its intent puts left lies
          RELATION_KEEP left of the other, as strongly as that intent (and so along y, with above
          and below). An unsure head (left as likely as right) pushes nothing, rather than
          pulling the two onto one line;
        - ``model.slot_separation``: present slots whose drawn squares come closer than the
          dataset's gap are pushed apart, each of a pair by half of what is missing along the axis
          they are furthest apart on (as real objects are placed: apart along x or y);
        - ``model.slot_in_canvas``: a slot whose drawn square pokes out of the canvas is moved back
          inside, and no further.

        Each push is weighted by both slots' gates, so absent slots (gate near 0) neither push nor
        are pushed; with ``model.slot_presence`` by a ramp on the gate instead, 0 below ABSENT_GATE
        and 1 above PRESENT_GATE: a trained G shows its objects with gates from 0.2 to 0.8, so pushes
        weighted by the gates themselves close only about a quarter of what is missing per round.
        What a slot's noise and state ask for is kept wherever it is free, so positions stay the
        noise's."""
        k = centres.shape[1]
        present = gates
        if self.presence:
            present = ((gates - ABSENT_GATE) / (PRESENT_GATE - ABSENT_GATE)).clamp(0.0, 1.0)
        weight = present[:, :, None] * present[:, None] * (1 - torch.eye(k, device=centres.device, dtype=centres.dtype))
        need = edge[:, :, None] + edge[:, None] + SEPARATION_GAP
        if relations is not None:  # (B, K, K, 2): how strongly i should lie before j along x and y
            before = relations[..., 0::2] - relations[..., 1::2]  # left - right, above - below
            intent = F.relu(0.5 * (before - before.transpose(1, 2))) * weight[..., None]
        for _ in range(SEPARATION_ROUNDS):
            if relations is not None:
                for axis in (0, 1):
                    along = centres[..., axis]  # (B, K)
                    # what "i before j" misses of the distance it keeps: (B, K, K)
                    push = 0.5 * F.relu(RELATION_KEEP - (along[:, None] - along[:, :, None])) * intent[..., axis]
                    moved = along - push.sum(2) + push.sum(1)  # i moves back, j on
                    centres = torch.stack([moved, centres[..., 1]] if axis == 0 else [centres[..., 0], moved], -1)
            if self.separate:
                apart = centres[:, :, None] - centres[:, None]  # (B, K, K, 2): slot i less slot j
                distance, axis = apart.abs().max(-1)
                missing = F.relu(need - distance) * weight  # (B, K, K)
                direction = F.one_hot(axis, 2).to(centres.dtype) * torch.sign(apart)
                centres = centres + 0.5 * (missing[..., None] * direction).sum(2)
            if self.in_canvas:
                e = edge[..., None]
                centres = centres + F.relu(e - centres) - F.relu(centres - (1 - e))
        return centres

    def open_sizes(self, z: torch.Tensor) -> torch.Tensor | None:
        """The size each slot is asked for where a caption leaves it open (``text.open_size_noise``):
        index 1 (large) where the slot's own noise number ``z[:, 2K + k]`` is positive, else 0
        (small), ``(B, K)``; None where ``z`` has fewer than ``3 K`` numbers."""
        k = self.slots
        return (z[:, 2 * k:3 * k] > 0).long() if z.shape[1] >= 3 * k else None

    def background(self, z: torch.Tensor) -> torch.Tensor:
        """The background ``(B, 3, S, S)`` from the noise alone."""
        h = self.background_map(z).view(z.shape[0], -1, 4, 4)
        return F.interpolate(h, size=self.image_size, mode="bilinear", align_corners=False)

    def masks(self, centres: torch.Tensor, scales: torch.Tensor, gates: torch.Tensor,
              s: torch.Tensor) -> torch.Tensor:
        """Each pixel's shares ``(B, K + 1, S * S)`` of the K layers and the background (last).

        ``model.mask_resolution``: ``half`` computes the mask logits on a grid of half the
        image's side and up-samples them bilinearly before the softmax, for a quarter of the work
        (the per-pixel MLP dominates G's step): logits are smooth, so edges stay as sharp as their
        slope makes them, but corners and points round off (a trained G's squares read as circles
        1.9x as often as the same G at full resolution, benchmarks/scenes_t2i.md). ``full``
        computes everything at the image's resolution (4x the cost); ``mixed`` only the mask MLP at
        half of it (up-sampled), the blob and the sprite, where corners live, at full resolution."""
        b, n = s.shape[0], self.image_size
        frozen = self.outline_supervised and torch.is_grad_enabled()
        m = n if self.mask_resolution == "full" else n // 2
        pixels = grid_coordinates(m, s.device, centres.dtype)  # (M*M, 2)
        if self.mask_resolution == "mixed":
            mlp = self._reshape(self._offsets(pixels[None, None] - centres[:, :, None], scales), s, sprite=False,
                                frozen=frozen)
            mlp = F.interpolate(mlp.view(b, -1, m, m), size=n, mode="bilinear", align_corners=False)
            pixels = grid_coordinates(n, s.device, centres.dtype)
            logits = self._mask_logits(pixels[None, None] - centres[:, :, None], scales, gates, s, mlp.flatten(2),
                                       frozen=frozen)
        else:
            logits = self._mask_logits(pixels[None, None] - centres[:, :, None], scales, gates, s, frozen=frozen)
            if m != n:
                logits = F.interpolate(logits.view(b, -1, m, m), size=n, mode="bilinear", align_corners=False)
        return torch.softmax(torch.cat([logits.flatten(2), logits.new_zeros(b, 1, n * n)], dim=1), dim=1)

    def window_logits(self, scales: torch.Tensor, gates: torch.Tensor, s: torch.Tensor, size: int) -> torch.Tensor:
        """Each slot's own mask logit ``(B, K, size, size)`` at the pixels of a ``size x size``
        window of the canvas centred on the slot (pixel ``i`` of the window lies ``i - (size - 1) / 2``
        pixels from the centre), at full resolution: where the slot shows against the background
        (a share of ``sigmoid(logit)`` with no other slot near). For supervising a slot's shape
        (``text.slot_weight``, :mod:`ganfuse.train.objects`)."""
        axis = (torch.arange(size, device=s.device, dtype=scales.dtype) - (size - 1) / 2) / self.image_size
        y, x = torch.meshgrid(axis, axis, indexing="ij")
        local = torch.stack([x.flatten(), y.flatten()], dim=1)  # (P, 2) in canvas units
        logits = self._mask_logits(local[None, None], scales, gates, s)
        return logits.view(*logits.shape[:2], size, size)

    def _offsets(self, from_centre: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
        """Points ``from_centre (B or 1, K or 1, P, 2)`` (canvas units) in each layer's own units."""
        return from_centre / (self.radius * scales[..., None, None])

    def _mask_logits(self, from_centre: torch.Tensor, scales: torch.Tensor, gates: torch.Tensor,
                     s: torch.Tensor, mlp_change: torch.Tensor | None = None, frozen: bool = False) -> torch.Tensor:
        """Each layer's mask logit ``(B, K, P)`` at points ``from_centre (B or 1, K or 1, P, 2)``
        away from its centre (canvas units); ``mlp_change (B, K, P)``: the mask MLP's part,
        computed elsewhere (``mixed`` resolution); ``frozen``: the outline decoder's part as a
        constant of the graph (see :meth:`_reshape`)."""
        offsets = self._offsets(from_centre, scales)
        distance2 = offsets.square().sum(-1)  # (B, K, P)
        # bounded logits: far from its centre a layer sits at a fixed low logit, so the softmax
        # never saturates into regions with no gradient
        # the MLP or sprite reshapes the blob within bounds: a layer cannot grow into a second background
        change = self._reshape(offsets, s, mlp=mlp_change is None, frozen=frozen)
        if mlp_change is not None:
            change = change + mlp_change
        reshape = MASK_RESHAPE * torch.tanh(change / MASK_RESHAPE)
        if self.mask_kind == "sprite":  # a sprite alone carves only (mlp+sprite keeps the MLP's bounds)
            reshape = reshape.clamp(max=0.0)
        return (MASK_PEAK - 0.5 * distance2.clamp(max=32) + reshape
                + torch.logit(gates, eps=1e-4)[..., None])

    def _reshape(self, offsets: torch.Tensor, s: torch.Tensor, mlp: bool = True, sprite: bool = True,
                 frozen: bool = False) -> torch.Tensor:
        """The unbounded change of each layer's mask logit ``(B, K, P)`` at offsets ``(B, K, P, 2)``
        (in the layer's units): the mask MLP's part and the sprite's, those asked for that the layer has.
        ``frozen`` (``model.outline_supervised``, the images' masks): the slots' states and the
        decoder's weights enter as constants, so a gradient through the change reaches only the
        offsets (the slots' places and sizes), never the outlines."""
        def call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
            if not frozen:
                return module(x)
            fixed = {name: p.detach() for name, p in module.named_parameters()}
            return torch.func.functional_call(module, fixed, (x,))

        if frozen:
            s = s.detach()
        change = None
        if mlp and "mlp" in self.mask_kind:
            distance2 = offsets.square().sum(-1, keepdim=True)
            local = torch.cat([offsets.clamp(-OFFSET_RANGE, OFFSET_RANGE), distance2.clamp(max=36)], dim=-1)
            hidden = F.leaky_relu(call(self.mask_offset, local) + call(self.shape_code, s)[:, :, None], 0.2)
            change = call(self.mask_out, hidden).squeeze(-1)
        if sprite and "sprite" in self.mask_kind:
            b, k, p = offsets.shape[:3]
            sprites = self.sprite_gain * call(self.sprite, s).view(b * k, 1, SPRITE, SPRITE)
            grid = (offsets / SPRITE_RANGE).view(b * k, p, 1, 2).to(sprites.dtype)  # beyond +-1 reads 0
            sampled = F.grid_sample(sprites, grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False).view(b, k, p)
            change = sampled if change is None else change + sampled
        return offsets.new_zeros(offsets.shape[:3]) if change is None else change

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond is None:
            raise ValueError("a text-to-image generator needs a condition (text) for every image")
        b, n = z.shape[0], self.image_size
        read, s = self._states(z, cond)
        centres, scales, gates, s = self._layout(s, z, read)
        self.last_spread = None
        # text.spread_weight: the same words, the next image's noise; only where the G step's graph
        # is kept (the D step's fakes are drawn without one and never read it)
        if self.training and self.spread and torch.is_grad_enabled():
            relations, other = self.last_relations, z.roll(1, 0)
            moved = self._layout(self._with_noise(read, other), other, read)[0]
            self.last_relations = relations
            self.last_spread = (centres, moved, gates, z[:, : 2 * self.slots], other[:, : 2 * self.slots])
        # what each slot looks like (its outline and colour): from its arranged state, or with
        # model.shape_from_words from the words alone, before the noise (which then only places it)
        look = read if self.shape_from_words else s
        shares = self.masks(centres, scales, gates, look)
        colours = torch.cat([self.colour(look), s.new_zeros(b, 1, self.colour[1].out_features)], dim=1)
        layers = torch.einsum("bkp,bkc->bcp", shares, colours).view(b, -1, n, n)
        out = layers + shares[:, -1].view(b, 1, n, n) * self.background(z)
        # the slots' centres of the latest batch, for an objective that judges each object where G
        # put it (text.object_weight); not part of the graph
        self.last_centres = centres.detach()
        # with text.slot_weight the objective supervises each slot's own mask and colour (and, with
        # text.layout_weight, D judges where the slots are): kept, with their graph where there is one
        self.last_slots = None
        if self.training and self.slot_window:
            self.last_slots = (self.window_logits(scales, gates, look, self.slot_window), colours[:, :-1], centres,
                               self.open_sizes(z))
        return out if self.training else out.clamp(-1.0, 1.0)


def crop_windows(images: torch.Tensor, centres: torch.Tensor, window: float, size: int) -> torch.Tensor:
    """Square windows of side ``window`` (a share of the canvas) around ``centres (B, K, 2)``
    ((x, y) in [0, 1]), resampled bilinearly to ``size x size``: ``(B, K, C, size, size)``.
    Outside the canvas reads zeros. Differentiable in the pixels (the centres are taken as given)."""
    b, k = centres.shape[:2]
    theta = centres.new_zeros(b * k, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = window
    theta[:, :, 2] = 2 * centres.reshape(b * k, 2) - 1
    grid = F.affine_grid(theta, [b * k, images.shape[1], size, size], align_corners=False)
    source = images.repeat_interleave(k, dim=0)
    crops = F.grid_sample(source, grid.to(images.dtype), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    return crops.view(b, k, images.shape[1], size, size)


class ObjectHead(nn.Module):
    """Object discriminator, in the manner of layout-to-image GANs (Layout2Im, LostGAN, OP-GAN):
    ``images (B, C, S, S), centres (B, K, 2), labels (B, M, A) -> logits (B, K, M)``: for every
    window (``OBJECT_WINDOW`` of the canvas around a centre, at native resolution) and every
    object description (one class index per attribute, negative where the attribute is left open),
    "a real object that this description fits". A projection discriminator (Miyato & Koyama 2018):
    ``psi(h) + <sum of the stated attributes' embeddings, h>`` over the window's features ``h``;
    ``classes`` gives each attribute's number of values (colours, shapes, sizes)."""

    def __init__(self, classes: tuple[int, ...], channels: int = 3, width: int = 32, image_size: int = 64,
                 sn: bool = False, dim: int = 128):
        super().__init__()
        self.crop = max(8, round(OBJECT_WINDOW * image_size))  # native resolution: no shape detail lost
        flat = 2 * width * (self.crop // 4) ** 2
        self.net = nn.Sequential(
            maybe_spectral_norm(nn.Conv2d(channels, width, 3, padding=1), sn), nn.LeakyReLU(0.2),
            maybe_spectral_norm(nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), sn), nn.LeakyReLU(0.2),
            maybe_spectral_norm(nn.Conv2d(2 * width, 2 * width, 4, stride=2, padding=1), sn), nn.LeakyReLU(0.2),
            nn.Flatten(), maybe_spectral_norm(nn.Linear(flat, dim), sn), nn.LeakyReLU(0.2))
        self.unconditional = maybe_spectral_norm(nn.Linear(dim, 1), sn)
        self.embed = nn.ModuleList(maybe_spectral_norm(nn.Embedding(n, dim), sn) for n in classes)

    def forward(self, images: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        b, k = centres.shape[:2]
        crops = crop_windows(images, centres, OBJECT_WINDOW, self.crop)
        h = self.net(crops.flatten(0, 1)).view(b, k, -1)
        e = sum(table(labels[..., a].clamp(min=0)) * (labels[..., a:a + 1] >= 0)
                for a, table in enumerate(self.embed))  # (B, M, dim)
        return self.unconditional(h) + torch.einsum("bkd,bmd->bkm", h, e)


class LayoutHead(nn.Module):
    """Layout discriminator: ``tokens (B, T, TOKEN_DIM), token mask (B, T), labels (B, M, 2),
    places (B, M, 3) -> logits (B,)``, "a real arrangement of these objects for this caption".
    Row ``m`` is the ``m``-th object the caption names (the scene graph's grounding of the caption,
    as sg2im's subject and object roles): each object is the sum of its colour, shape and row
    embeddings (padding rows have negative labels and take no part) and an MLP of its place (centre
    ``(x, y)`` in [0, 1] and extent, ``train.objects.window_extent``), so
    "the first named object is left of the second" is a comparison of two rows; two rounds of (cross-attention objects -> words,
    self-attention among objects, MLP) let a relation word compare the places of the two objects it
    binds; the verdict is the mean of the objects' scores. With the extent it also sees sizes, and
    where a caption leaves a size open, whether they vary as the real ones do. Sets of a few vectors: the relations and spreads a scene-level D must find in pixels
    are explicit here (sg2im's and LayoutGAN's layout-level judges)."""

    def __init__(self, classes: tuple[int, ...], dim: int = 64):
        super().__init__()
        self.embed = nn.ModuleList(nn.Embedding(n, dim) for n in classes)
        self.order = nn.Embedding(MAX_OBJECTS, dim)
        self.place = nn.Sequential(nn.Linear(3, dim), nn.GELU(), nn.Linear(dim, dim))
        self.words = nn.Linear(TOKEN_DIM, dim)
        self.layers = nn.ModuleList()
        for _ in range(2):
            self.layers.extend([AttentionLayer(dim, dim), AttentionLayer(dim), FeedForward(dim)])
        self.score = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor, labels: torch.Tensor,
                places: torch.Tensor) -> torch.Tensor:
        present = (labels >= 0).all(-1)
        h = (self.place(2 * places - 1) + self.order.weight[: labels.shape[1]]
             + sum(table(labels[..., a].clamp(min=0)) for a, table in enumerate(self.embed)))
        w = self.words(tokens)
        for cross, self_attn, mlp in zip(self.layers[0::3], self.layers[1::3], self.layers[2::3], strict=True):
            h = mlp(self_attn(cross(h, w, token_mask), mask=present))
        return masked_mean(self.score(h), present).squeeze(-1)


class WordDiscriminator(TextDiscriminator):
    """Images ``(B, 3, S, S)`` and word ids ``(B, T)`` -> :class:`DiscriminatorOutput` (logits
    ``(B,)``: "a real image that its caption describes"); ``mismatch=`` scores the same images
    with other captions from the same trunk pass, ``features=`` returns the blocks' maps. It has no
    contrastive embedding heads (``embed``/``negatives`` are refused)."""

    has_embedding = False

    def __init__(self, spec: TextSpec, image_size: int = 64, width: int = 32, cond_dim: int = 128,
                 channels: int = 3, sn: bool = False, regions: int = 8,
                 object_classes: tuple[int, ...] = (), layout_classes: tuple[int, ...] = ()):
        super().__init__()
        if spec.kind != "tokens":
            raise ConfigError("model.arch=t2i-words reads words: set text.encoder=small")
        # the layout discriminator (text.layout_weight > 0): object sets and their places
        self.layout = LayoutHead(layout_classes) if layout_classes else None
        # the object discriminator (text.object_weight > 0): a separate small network of object windows
        self.objects = ObjectHead(object_classes, channels, width, image_size, sn) if object_classes else None
        down = int(math.log2(image_size // regions))
        if image_size < 2 * regions or image_size & (image_size - 1):
            raise ConfigError(f"t2i-words needs a power-of-two image size >= {2 * regions}, got {image_size}")
        self.text = TokenConditioner(spec, cond_dim)
        # the first layer halves the resolution at once: at 64x64 a full-resolution 3x3 layer cost
        # more than the rest of D together, and a 4x4 stride-2 convolution still sees every pixel
        widths = [width * 2**i for i in range(down)]
        self.from_rgb = maybe_spectral_norm(nn.Conv2d(channels, widths[0], 4, stride=2, padding=1), sn)
        self.blocks = nn.Sequential(*(DownBlock(a, b, sn) for a, b in zip(widths[:-1], widths[1:], strict=True)))
        c = widths[-1]
        self.final = DownBlock(c, c, sn)  # regions -> regions / 2
        flat = c * (regions // 2) ** 2
        self.linear = maybe_spectral_norm(nn.Linear(flat, 1), sn)
        self.project = maybe_spectral_norm(nn.Linear(cond_dim, flat, bias=False), sn)
        dim = cond_dim
        self.region_pos = nn.Parameter(torch.randn(regions * regions, c) * 0.1)
        self.region_proj = nn.Linear(c, dim)
        self.token_proj = nn.Linear(TOKEN_DIM, dim)
        self.find = AttentionLayer(dim, dim)
        self.combine = nn.ModuleList([AttentionLayer(dim), FeedForward(dim)])
        self.word_score = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))

    def _score(self, h: torch.Tensor, regions: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        words = self.text.features(ids)
        c = words.pooled
        flat = h.flatten(1)
        logits = self.linear(flat).squeeze(1) + (self.project(c) * flat).sum(1)
        w = self.find(self.token_proj(words.tokens), regions)
        w = self.combine[1](self.combine[0](w, mask=words.mask))
        mask = words.mask.to(w.dtype)
        word_logit = (self.word_score(w).squeeze(-1) * mask).sum(1) / mask.sum(1)
        return logits + word_logit, c

    def forward(self, x: torch.Tensor, cond: torch.Tensor, *, mismatch: torch.Tensor | None = None,
                embed: bool = False, features: bool = False,
                negatives: torch.Tensor | None = None,
                objects: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                layouts: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> DiscriminatorOutput:
        """``objects=(images, centres (B, K, 2), labels (B, M, A))`` also scores every window of
        those images at those centres against every object description with the object head
        (``object_logits (B, K, M)``); ``images`` may differ from ``x`` (D's input may be augmented,
        the object head reads objects where they are). ``layouts=(word ids (L, T), labels (L, M,
        2), places (L, M, 3))`` scores object layouts against captions with the layout head
        (``layout_logits (L,)``)."""
        check_text_request(self, cond, embed or negatives is not None)
        object_logits = layout_logits = None
        if objects is not None:
            if self.objects is None:
                raise ValueError("this discriminator has no object head (text.object_weight is 0)")
            object_logits = self.objects(*objects)
        if layouts is not None:
            if self.layout is None:
                raise ValueError("this discriminator has no layout head (text.layout_weight is 0)")
            ids, labels, places = layouts
            words = self.text.features(ids)
            layout_logits = self.layout(words.tokens, words.mask, labels, places)
        h, maps = F.leaky_relu(self.from_rgb(x), 0.2), []
        for block in self.blocks:
            h = block(h)
            maps.append(h)
        region_map = F.leaky_relu(h, 0.2)
        regions = self.region_proj(region_map.flatten(2).transpose(1, 2) + self.region_pos)
        top = F.leaky_relu(self.final(region_map), 0.2)
        maps.append(top)
        logits, c = self._score(top, regions, cond)
        wrong = self._score(top, regions, mismatch)[0] if mismatch is not None else None
        return DiscriminatorOutput(logits, wrong, None, None, c, maps if features else None,
                                   object_logits=object_logits, layout_logits=layout_logits)
