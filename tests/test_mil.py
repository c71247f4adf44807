"""Known-answer tests for melrepro.methods.mil: Eq. 4 strides, Eq. 1 adjacency, DR counts, Eq. 3 maps."""

import math
import tracemalloc

import numpy as np
import pytest
import torch
from sklearn.metrics import jaccard_score
from torch_geometric.data import Batch, Data

from melrepro.methods import mil


@pytest.mark.parametrize(
    ("height", "stride"),
    [(450, 50), (767, 50), (999, 50), (1000, 120), (1999, 120), (2000, 200), (4439, 200)],
)
def test_stride_for_height_follows_eq4_bands(height, stride):
    """Check the three height bands of Eq. 4 and their limits."""
    assert mil.stride_for_height(height) == stride


def test_stride_for_height_rejects_mismatched_bands():
    with pytest.raises(ValueError, match="one more stride"):
        mil.stride_for_height(500, strides=(50, 120), height_bounds=(1000, 2000))
    assert mil.stride_for_height(500, strides=(50, 120), height_bounds=(1000,)) == 50


@pytest.mark.parametrize(
    ("height", "width", "n_rows", "n_cols"),
    [
        # (h - 224) // s + 1 blocks per side, s from Eq. 4
        (767, 1022, 543 // 50 + 1, 798 // 50 + 1),  # 11 x 16, s = 50
        (1536, 2048, 1312 // 120 + 1, 1824 // 120 + 1),  # 11 x 16, s = 120
        (4439, 6688, 4215 // 200 + 1, 6464 // 200 + 1),  # 22 x 33, s = 200
    ],
)
def test_block_grid_matches_eq4_for_each_height_band(height, width, n_rows, n_cols):
    """Check the block count, spacing and bounds of the k=224 grid in each band."""
    stride = mil.stride_for_height(height)
    coords = mil.block_grid(height, width, block_size=224, stride=stride)
    assert coords.shape == (n_rows * n_cols, 2)
    ys, xs = np.unique(coords[:, 0]), np.unique(coords[:, 1])
    assert (len(ys), len(xs)) == (n_rows, n_cols)
    assert set(np.diff(ys)) == {stride}
    assert set(np.diff(xs)) == {stride}
    assert ys[0] == xs[0] == 0
    assert ys[-1] + 224 <= height
    assert xs[-1] + 224 <= width


def test_block_grid_cover_edges_adds_flush_blocks():
    coords = mil.block_grid(300, 300, block_size=224, stride=50, cover_edges=True)
    assert sorted(set(coords[:, 0])) == [0, 50, 76]


def test_block_adjacency_hand_computed_3x3_grid():
    """Stride k: orthogonal neighbours at k and diagonals at √2·k are adjacent, 2k is not."""
    k = 10
    coords = mil.block_grid(30, 30, block_size=k, stride=k)  # 3 x 3 blocks, row-major
    edges = mil.block_adjacency(mil.block_centres(coords, k), k)
    neighbours = {i: set(edges[1, edges[0] == i].tolist()) for i in range(9)}
    assert neighbours[4] == {0, 1, 2, 3, 5, 6, 7, 8}
    assert neighbours[0] == {1, 3, 4}
    assert neighbours[1] == {0, 2, 3, 4, 5}
    assert edges.shape == (2, 2 * (12 + 8))
    assert not np.any(edges[0] == edges[1])


def test_block_adjacency_matches_brute_force_distances():
    coords = mil.block_grid(767, 1022, block_size=224, stride=50)
    centres = mil.block_centres(coords, 224)
    edges = mil.block_adjacency(centres, 224)
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
    expected = np.argwhere((dist <= math.sqrt(2) * 224) & ~np.eye(len(centres), dtype=bool))
    np.testing.assert_array_equal(edges.T, expected)


def test_stride_reading_of_eq1_is_the_8_neighbourhood():
    """Radius √2·s on a stride-s grid: exactly the blocks one grid step away, diagonals included.

    The literal √2·k reading on the same ISIC-sized grid (k = 224, s = 50) links ~80 blocks.
    """
    k, s = 224, 50
    coords = mil.block_grid(767, 1022, block_size=k, stride=s)
    centres = mil.block_centres(coords, k)
    stride_edges = mil.block_adjacency(centres, mil.adjacency_unit("stride", k, s), dtype=np.int32)
    assert stride_edges.dtype == np.int32
    step = np.abs(coords[:, None] - coords[None]) // s
    expected = np.argwhere(step.max(-1) == 1)
    np.testing.assert_array_equal(stride_edges.T, expected)
    interior = (coords[:, 0] > 0) & (coords[:, 1] > 0) & (coords[:, 0] < coords[:, 0].max())
    interior &= coords[:, 1] < coords[:, 1].max()
    degree = np.bincount(stride_edges[0], minlength=len(coords))
    assert set(degree[interior]) == {8}
    block_edges = mil.block_adjacency(centres, mil.adjacency_unit("block", k, s))
    assert 70 < block_edges.shape[1] / len(coords) < 90
    with pytest.raises(ValueError, match="adjacency_radius"):
        mil.adjacency_unit("diagonal", k, s)


def _smooth_image(height=90, width=130):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    field = gaussian_filter(rng.random((height, width, 3)), (4, 4, 0))
    field = (field - field.min()) / (field.max() - field.min())
    image = (field * 200).astype(np.uint8)
    image[10:30, 20:40] = 255
    return image


@pytest.mark.parametrize("angle", [0, 18, 45, 90, 137, 180, 333])
def test_rotate_tensor_matches_scipy_rotation(angle):
    """torchvision rotation of a reflect-padded tensor = scipy's mirrored rotation (±1 grey level)."""
    image = _smooth_image()
    reference = mil.rotate_image(image, angle).astype(int)
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    got = mil.rotate_tensor(tensor, angle).permute(1, 2, 0).numpy().astype(int)
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() <= 1
    assert np.mean(got != reference) < 0.01
    if angle not in (0, 180):
        assert np.abs(reference - image).mean() > 10  # the rotation did something


def test_dihedral_and_unfold_blocks_on_tensors_equal_numpy():
    image = _smooth_image()
    tensor = torch.from_numpy(image).permute(2, 0, 1).contiguous()
    for view in range(8):
        np.testing.assert_array_equal(
            mil.dihedral_tensor(tensor, view).permute(1, 2, 0).numpy(), mil.dihedral(image, view)
        )
    for height, width, cover in ((90, 130, True), (20, 30, False)):
        small = image[:height, :width]
        coords = mil.block_grid(height, width, block_size=32, stride=10, cover_edges=cover)
        expected = np.concatenate(list(mil.block_batches(small, coords, 32, 7)))
        t = torch.from_numpy(np.ascontiguousarray(small)).permute(2, 0, 1)
        got = torch.cat(list(mil.tensor_block_batches(t, coords, 32, 7)))
        np.testing.assert_array_equal(got.permute(0, 2, 3, 1).numpy(), expected)


def test_block_encoder_channels_first_equals_channels_last():
    torch.manual_seed(0)
    encoder = mil.BlockEncoder().eval()
    blocks = torch.randint(0, 256, (3, 32, 32, 3), dtype=torch.uint8)
    with torch.no_grad():
        last = encoder(blocks)
        first = encoder(blocks.permute(0, 3, 1, 2), channels_first=True)
    torch.testing.assert_close(first, last)


def test_block_batches_equal_slices_and_stay_small():
    """Check block contents, and that peak memory stays near one image, not N blocks."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(1200, 1600, 3), dtype=np.uint8)
    coords = mil.block_grid(1200, 1600, block_size=224, stride=120)
    tracemalloc.start()
    n = 0
    for batch in mil.block_batches(image, coords, 224, batch_size=16):
        for block, (y, x) in zip(batch, coords[n : n + len(batch)], strict=True):
            np.testing.assert_array_equal(block, image[y : y + 224, x : x + 224])
        n += len(batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == len(coords) == 9 * 12
    all_blocks = len(coords) * 224 * 224 * 3
    assert peak < image.nbytes < all_blocks / 2


def test_block_batches_pads_small_images():
    image = np.ones((20, 30, 3), dtype=np.uint8)
    coords = mil.block_grid(20, 30, block_size=32, stride=8)
    (batch,) = list(mil.block_batches(image, coords, 32, batch_size=4))
    assert batch.shape == (1, 32, 32, 3)


def test_dr_counts_reproduce_table1_rule():
    """Melanoma and SK every 18° (20 copies), nevus every 45° (8 copies): Table 1's DR row."""
    table = mil.dr_counts(
        {"melanoma": 374, "seborrheic_keratosis": 254, "nevus": 1372},
        {"melanoma": 18, "seborrheic_keratosis": 18, "nevus": 45},
    )
    assert table["rotations"].to_dict() == {
        "melanoma": 20,
        "seborrheic_keratosis": 20,
        "nevus": 8,
    }
    assert table["dr"].to_dict() == {
        "melanoma": 7480,
        "seborrheic_keratosis": 5080,
        "nevus": 10976,
    }


def test_rotation_angles_and_rotate_image():
    np.testing.assert_allclose(mil.rotation_angles(45), [0, 45, 90, 135, 180, 225, 270, 315])
    image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    np.testing.assert_array_equal(mil.rotate_image(image, 180), image[::-1, ::-1])
    square = np.arange(6 * 6 * 3, dtype=np.uint8).reshape(6, 6, 3)
    np.testing.assert_array_equal(mil.rotate_image(square, 90), np.rot90(square))
    rotated = mil.rotate_image(image, 18)
    assert rotated.shape == image.shape
    assert rotated.dtype == np.uint8
    with pytest.raises(ValueError, match="rotation step"):
        mil.rotation_angles(0)


def test_dihedral_gives_the_eight_flips_and_quarter_turns():
    image = np.arange(2 * 3).reshape(2, 3)
    np.testing.assert_array_equal(mil.dihedral(image, 0), image)
    np.testing.assert_array_equal(mil.dihedral(image, 1), np.rot90(image))
    np.testing.assert_array_equal(mil.dihedral(image, 4), image[:, ::-1])
    views = {
        mil.dihedral(image, v).tobytes() + bytes(mil.dihedral(image, v).shape) for v in range(8)
    }
    assert len(views) == 8
    with pytest.raises(ValueError, match="0..7"):
        mil.dihedral(image, 8)


def test_segmentation_map_two_block_max_rule():
    """Two overlapping blocks: overlap pixels take the larger score, others their own."""
    coords = np.array([[0, 0], [0, 2]])
    seg = mil.segmentation_map((4, 7), coords, 4, np.array([0.3, 0.7]))
    expected = np.zeros((4, 7), dtype=np.float32)
    expected[:, 0:2] = 0.3
    expected[:, 2:6] = 0.7  # columns 2-3 are covered by both: max(0.3, 0.7)
    np.testing.assert_array_equal(seg, expected)
    seg = mil.segmentation_map((4, 7), coords, 4, np.array([0.7, 0.3]))
    expected[:, 0:4] = 0.7
    expected[:, 4:6] = 0.3
    np.testing.assert_array_equal(seg, expected)  # column 6 is uncovered: 0


def test_block_scores_scale_attention_by_probability():
    scores = mil.block_scores(np.array([0.1, 0.4, 0.5]), np.array([0.2, 0.7, 0.1]))
    np.testing.assert_allclose(scores, [0.7 * 0.2, 0.7 * 0.8, 0.7])


def test_jaccard_index_agrees_with_sklearn():
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 40, 50)) > 0.6
    assert mil.jaccard_index(a, b) == pytest.approx(jaccard_score(b.ravel(), a.ravel()))
    assert mil.jaccard_index(np.zeros(4), np.zeros(4)) == 1.0


def test_threshold_sweep_finds_the_separating_threshold():
    truth = np.zeros((10, 10), dtype=bool)
    truth[2:6, 2:6] = True
    score = np.where(truth, 0.62, 0.32)
    sweep = mil.threshold_sweep([score], [truth], np.linspace(0, 1, 21))
    assert sweep[:7] == pytest.approx(0.16)  # η <= 0.3: everything is lesion, 16 / 100
    assert sweep[7:13] == pytest.approx(1.0)  # η in 0.35 .. 0.6
    assert sweep[13:] == pytest.approx(0.0)


def _random_bag(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    coords = mil.block_grid(n, 1, block_size=1, stride=1)
    edge_index = torch.from_numpy(mil.block_adjacency(mil.block_centres(coords, 1), 1))
    return Data(x=x, edge_index=edge_index)


def test_gcn_mil_attention_sums_to_one_and_batches_match_single_calls():
    torch.manual_seed(0)
    model = mil.GCNMIL(16, 16, 8, 3).eval()
    bags = [_random_bag(5, 1), _random_bag(7, 2)]
    batch = Batch.from_data_list(bags)
    with torch.no_grad():
        logits, alpha = model(batch.x, batch.edge_index, batch.batch)
        assert logits.shape == (2, 3)
        sums = torch.zeros(2).index_add_(0, batch.batch, alpha)
        torch.testing.assert_close(sums, torch.ones(2))
        for i, bag in enumerate(bags):
            single_logits, single_alpha = model(bag.x, bag.edge_index)
            torch.testing.assert_close(single_logits[0], logits[i])
            torch.testing.assert_close(single_alpha, alpha[batch.batch == i])


def test_gcn_mil_sparse_adjacency_matches_edge_index_gcn():
    """The CSR propagation used in forward equals GCNConv on the plain edge list."""
    torch.manual_seed(0)
    model = mil.GCNMIL(16, 16, 8, 3)
    bag = _random_bag(9, 5)
    adj = mil._csr_adjacency(bag.edge_index, 9)
    torch.testing.assert_close(model.conv1(bag.x, adj), model.conv1(bag.x, bag.edge_index))


def test_gcn_mil_is_invariant_to_block_order():
    torch.manual_seed(0)
    model = mil.GCNMIL(16, 16, 8, 3).eval()
    bag = _random_bag(6, 3)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    inverse = torch.argsort(perm)
    with torch.no_grad():
        logits, alpha = model(bag.x, bag.edge_index)
        logits_p, alpha_p = model(bag.x[perm], inverse[bag.edge_index])
    torch.testing.assert_close(logits, logits_p)
    torch.testing.assert_close(alpha[perm], alpha_p)


def test_gcn_mil_ones_init_keeps_hidden_units_identical():
    """The paper's all-ones initialisation makes every hidden unit the same (why we deviate)."""
    model = mil.GCNMIL(16, 16, 8, 3, init="ones")
    bag = _random_bag(5, 4)
    h = model.conv1(bag.x, bag.edge_index)
    assert torch.allclose(h, h[:, :1].expand_as(h))
    with pytest.raises(ValueError, match="unknown init"):
        mil.GCNMIL(init="zeros")


def test_layer_table_reads_table2_from_the_model():
    table = mil.layer_table(mil.BlockEncoder(pretrained=False), mil.GCNMIL())
    assert table.loc["19", "parameters"] == 512 * 512 + 512
    assert table.loc["22", "parameters"] == 512 * 3 + 3
    assert table.loc["21", "type"] == "GraphAttention(L=128)"
    assert table.loc["1-18", "parameters"] == 11_176_512


def test_block_encoder_gives_512_features_for_small_blocks():
    enc = mil.BlockEncoder(pretrained=False).eval()
    with torch.no_grad():
        out = enc(torch.zeros(2, 32, 32, 3, dtype=torch.uint8))
    assert out.shape == (2, 512)
