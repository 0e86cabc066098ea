"""Networks (U-Net, conv stacks): parameter counts, shapes, crops; model files."""

import dataclasses

import numpy as np
import pytest
import torch

from diluvian.config import Config, ModelConfig, NetworkConfig, load_config
from diluvian.errors import ModelError
from diluvian.network import (
    build_network,
    check_model_config,
    config_files_set_network,
    count_parameters,
    load_model,
    read_model_config,
    save_model,
    unet_downsample_axes,
)


def model_cfg(inp, out=None):
    return ModelConfig(input_fov_shape=tuple(inp), output_fov_shape=tuple(out or inp))


def inputs(shape, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand((n, 1, *shape), generator=g)
    mask = torch.full((n, 1, *shape), 0.05)
    c = tuple(s // 2 for s in shape)
    mask[:, :, c[0], c[1], c[2]] = 0.95
    return image, mask


# --------------------------------------------------------------------------- parameter counts


def test_unet_parameter_count_matches_the_original():
    net = build_network(model_cfg((13, 33, 33)),
                        NetworkConfig(factory="unet", convolution_filters=32, unet_depth=4,
                                      unet_downsample_rate=(0, 1, 1), num_layers_per_module=2))
    assert count_parameters(net) == 27_929_953


def test_ffn_convstack_parameter_count_is_google_ffn_depth_12():
    # google/ffn FIB-25: depth 12, 32 features -> 24 3x3x3 convs + 1x1x1 head
    # conv0_a 2*32*27+32 + conv0_b 32*32*27+32 + 11 modules * 2 * (32*32*27+32) + 33
    expected = (2 * 32 * 27 + 32) + (32 * 32 * 27 + 32) + 11 * 2 * (32 * 32 * 27 + 32) + 33
    assert expected == 638_433
    net = build_network(model_cfg((33, 33, 33)),
                        NetworkConfig(factory="convstack", convstack_variant="ffn", num_modules=12,
                                      convolution_filters=32))
    assert count_parameters(net) == expected
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (3, 3, 3)]
    assert len(convs) == 24


def test_gpu_config_is_the_ffn_model():
    cfg = load_config(["gpu"])
    net = build_network(cfg.model, cfg.network)
    assert count_parameters(net) == 638_433
    assert cfg.model.input_fov_shape == (33, 33, 33) and cfg.model.move_step == (8, 8, 8)


def test_diluvian_convstack_parameter_count():
    # stem 2->32, 8 modules of 2 convs, 3x3x3 head: about 0.45 M (spec 3.3)
    net = build_network(model_cfg((33, 33, 33)), NetworkConfig(factory="convstack", num_modules=8))
    assert count_parameters(net) == (2 * 32 * 27 + 32) + 16 * (32 * 32 * 27 + 32) + (32 * 27 + 1) == 445_505


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("inp, rate", [((13, 33, 33), (0, 1, 1)), ((9, 17, 25), (1, 1, 1)), ((11, 11, 11), (1, 1, 1)),
                                      ((7, 21, 15), (0, 1, 1)), ((15, 15, 15), (2, 1, 1))])
def test_unet_shapes_for_odd_fovs(inp, rate):
    net = build_network(model_cfg(inp), NetworkConfig(factory="unet", convolution_filters=2, unet_depth=3,
                                                      unet_downsample_rate=rate, dropout_probability=0.1))
    image, mask = inputs(inp)
    assert net(image, mask).shape == (2, 1, *inp)
    assert net.input_fov_shape == inp and net.output_fov_shape == inp


def test_unet_fixed_rate_axes():
    cfg = NetworkConfig(factory="unet", unet_depth=4, unet_downsample_rate=(2, 1, 0))
    # remaining levels below: 3, 2, 1
    assert unet_downsample_axes(cfg) == [(False, True, False), (True, True, False), (False, True, False)]


def test_unet_isotropy_mode_follows_the_docstring_example():
    cfg = NetworkConfig(factory="unet", unet_depth=5, unet_downsample_mode="isotropy_approximating",
                        resolution=(40.0, 4.0, 4.0), convolution_filters=2)
    assert unet_downsample_axes(cfg) == [(False, True, True)] * 3 + [(True, True, True)]
    net = build_network(model_cfg((13, 33, 33), (7, 17, 17)), cfg)
    image, mask = inputs((13, 33, 33), n=1)
    assert net(image, mask).shape == (1, 1, 7, 17, 17)


def test_unet_too_deep_is_a_config_error():
    from diluvian.errors import ConfigError

    with pytest.raises(ConfigError, match="unet_depth"):
        build_network(model_cfg((5, 5, 5)), NetworkConfig(factory="unet", unet_depth=5, convolution_filters=2))


@pytest.mark.parametrize("variant", ["diluvian", "ffn"])
@pytest.mark.parametrize("inp, out", [((17, 17, 17), (17, 17, 17)), ((17, 17, 17), (9, 9, 9)), ((9, 19, 13), (5, 11, 13))])
def test_convstack_shapes_and_crop(variant, inp, out):
    net = build_network(model_cfg(inp, out), NetworkConfig(convstack_variant=variant, num_modules=3,
                                                           convolution_filters=4, batch_normalization=True,
                                                           dropout_probability=0.1))
    image, mask = inputs(inp)
    assert net(image, mask).shape == (2, 1, *out)


def test_ffn_output_is_additive_and_centre_cropped():
    inp, out = (11, 13, 15), (5, 7, 9)
    net = build_network(model_cfg(inp, out), NetworkConfig(convstack_variant="ffn", num_modules=2,
                                                           convolution_filters=4))
    head = net.core.head
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    image, mask = inputs(inp)
    mask = torch.rand(mask.shape) * 0.9 + 0.05
    logits = net(image, mask)
    lo = [(i - o) // 2 for i, o in zip(inp, out)]
    expected = torch.logit(mask[:, :, lo[0]:lo[0] + out[0], lo[1]:lo[1] + out[1], lo[2]:lo[2] + out[2]])
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_unet_output_crop_is_centred():
    inp, out = (9, 9, 9), (5, 5, 5)
    cfg = NetworkConfig(factory="unet", convolution_filters=2, unet_depth=2)
    small = build_network(model_cfg(inp, out), cfg).eval()
    full = build_network(model_cfg(inp), cfg).eval()
    full.load_state_dict(small.state_dict())
    image, mask = inputs(inp)
    with torch.no_grad():
        torch.testing.assert_close(small(image, mask), full(image, mask)[:, :, 2:7, 2:7, 2:7])


def test_transpose_flag_reverses_the_axes():
    inp = (5, 9, 13)
    base = NetworkConfig(factory="unet", convolution_filters=2, unet_depth=2)
    # a model trained on XYZ data: its own geometry is reversed
    xyz = build_network(model_cfg(tuple(reversed(inp))), base).eval()
    zyx = build_network(model_cfg(inp), dataclasses.replace(base, transpose=True)).eval()
    zyx.load_state_dict(xyz.state_dict())
    image, mask = inputs(inp)
    with torch.no_grad():
        want = xyz(image.permute(0, 1, 4, 3, 2), mask.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2)
        torch.testing.assert_close(zyx(image, mask), want)


def test_rescale_image_maps_to_minus_one_one():
    inp = (7, 7, 7)
    plain = build_network(model_cfg(inp), NetworkConfig(num_modules=1, convolution_filters=2)).eval()
    rescaled = build_network(model_cfg(inp), NetworkConfig(num_modules=1, convolution_filters=2,
                                                           rescale_image=True)).eval()
    rescaled.load_state_dict(plain.state_dict())
    image, mask = inputs(inp)
    with torch.no_grad():
        torch.testing.assert_close(rescaled(image, mask), plain((image - 0.5) * 2, mask))


@pytest.mark.parametrize("init", ["glorot_uniform", "he_normal", "default"])
@pytest.mark.parametrize("activation", ["relu", "elu", "leaky_relu"])
def test_initialization_and_activation_options(init, activation):
    net = build_network(model_cfg((7, 7, 7)), NetworkConfig(num_modules=1, convolution_filters=2,
                                                            initialization=init,
                                                            convolution_activation=activation))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    if init != "default":
        assert all(float(c.bias.detach().abs().max()) == 0.0 for c in convs)
    image, mask = inputs((7, 7, 7))
    assert torch.isfinite(net(image, mask)).all()


# --------------------------------------------------------------------------- model files


def small_config(**network):
    net = dict(factory="convstack", convstack_variant="ffn", num_modules=2, convolution_filters=4)
    net.update(network)
    return dataclasses.replace(Config(), model=model_cfg((9, 9, 9), (7, 7, 7)), network=NetworkConfig(**net))


def test_save_load_round_trip(tmp_path):
    cfg = small_config()
    net = build_network(cfg.model, cfg.network)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    image, mask = inputs((9, 9, 9))
    net(image, mask).mean().backward()
    opt.step()
    path = tmp_path / "m.pt"
    save_model(path, net, cfg, optimizer_state=opt.state_dict(), epoch=3, metrics={"val_subv_metric": 0.5})
    loaded, cfg2, ckpt = load_model(path)
    assert cfg2 == cfg
    assert ckpt["epoch"] == 3 and ckpt["metrics"] == {"val_subv_metric": 0.5}
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(image, mask), net(image, mask))
    opt2 = torch.optim.Adam(loaded.parameters(), lr=0.01)
    opt2.load_state_dict(ckpt["optimizer_state"])
    assert read_model_config(path) == cfg
    assert not list(tmp_path.glob(".m.pt*"))  # no temporary left behind


def test_load_rejects_files_that_are_not_models(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ModelError, match="notes.pt: not a diluvian model"):
        load_model(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(ModelError, match="other.pt: not a diluvian model"):
        load_model(other)
    with pytest.raises(ModelError, match="no such model file"):
        load_model(tmp_path / "missing.pt")
    with pytest.raises(ModelError, match="is a directory"):
        load_model(tmp_path)


def test_load_rejects_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "diluvian-model", "version": 1, "x": Evil()}, path)
    with pytest.raises(ModelError, match="evil.pt"):
        load_model(path)


def test_weights_that_do_not_fit_the_stored_config(tmp_path):
    cfg = small_config()
    net = build_network(cfg.model, cfg.network)
    path = tmp_path / "m.pt"
    save_model(path, net, dataclasses.replace(cfg, network=dataclasses.replace(cfg.network, convolution_filters=8)))
    with pytest.raises(ModelError, match="weights do not match"):
        load_model(path)


def test_check_model_config():
    model = small_config()
    user = Config()
    # not set by the user: the model's network and FOVs are used
    merged = check_model_config(model, user, explicitly_set=False)
    assert merged.network == model.network and merged.model.input_fov_shape == (9, 9, 9)
    assert merged.training == user.training
    # set by the user and different: one line naming the keys
    with pytest.raises(ModelError) as e:
        check_model_config(model, user, explicitly_set=True, model_file="m.pt")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("m.pt:")
    assert "network.convstack_variant" in msg and "model.input_fov_shape" in msg
    assert "network.rescale_image" not in msg
    # set and equal: fine
    assert check_model_config(model, model, explicitly_set=True) == model


def test_config_files_set_network(tmp_path):
    a = tmp_path / "a.toml"
    a.write_text("[training]\ngpu_batch_size = 4\n[model]\nt_move = 0.8\n")
    b = tmp_path / "b.toml"
    b.write_text("[model]\ninput_fov_shape = [9, 9, 9]\n")
    assert not config_files_set_network([a, "default"])
    assert config_files_set_network([a, b])
    assert config_files_set_network(["cpu_small"])
    c = tmp_path / "c.toml"
    c.write_text("[volume]\nresolution = [20, 20, 20]\n")
    assert config_files_set_network([c]) and config_files_set_network(["cpu_real"])


def test_only_the_keys_a_config_file_sets_are_compared_with_the_model(tmp_path):
    """Regression: a -c file setting only [volume] resolution (and partitions) made every default
    network key count as set, so filling a U-Net model failed with a list of default-vs-model keys."""
    import dataclasses

    from diluvian.network import network_keys_set

    c = tmp_path / "c.toml"
    c.write_text("[volume]\nresolution = [10, 10, 10]\n[training]\npartitions = { '.*' = [1, 1, 2] }\n")
    assert network_keys_set([c]) == {"volume.resolution"}
    assert network_keys_set([c, "default"]) == set()
    assert "network.unet_depth" in network_keys_set(["cpu_small"])
    model = small_config()
    model = dataclasses.replace(model, volume=dataclasses.replace(model.volume, resolution=(10.0, 10.0, 10.0)))
    user = dataclasses.replace(Config(), volume=dataclasses.replace(Config().volume, resolution=(10.0, 10.0, 10.0)))
    assert check_model_config(model, user, network_keys_set([c])).network == model.network
    d = tmp_path / "d.toml"
    d.write_text("[network]\nconvolution_filters = 64\n")
    other = dataclasses.replace(model, network=dataclasses.replace(model.network, convolution_filters=64))
    with pytest.raises(ModelError) as e:
        check_model_config(model, other, network_keys_set([c, d]), model_file="m.pt")
    assert "network.convolution_filters = 64" in str(e.value) and "convstack_variant" not in str(e.value)


def test_model_working_resolution_goes_with_the_model():
    """A model trained on volumes downsampled to 20 nm fills at 20 nm, not at the data's own resolution."""
    import dataclasses

    model = small_config()
    model = dataclasses.replace(model, volume=dataclasses.replace(model.volume, resolution=(20.0, 20.0, 20.0)))
    merged = check_model_config(model, Config(), explicitly_set=False)
    assert merged.volume.resolution == (20.0, 20.0, 20.0)
    # the user's config names the same network and resolution: fine; another resolution: an error
    assert check_model_config(model, model, explicitly_set=True).volume.resolution == (20.0, 20.0, 20.0)
    other = dataclasses.replace(model, volume=dataclasses.replace(model.volume, resolution=(10.0, 10.0, 10.0)))
    with pytest.raises(ModelError, match=r"volume.resolution = \[10.0, 10.0, 10.0\] \(model: \[20.0, 20.0, 20.0\]\)"):
        check_model_config(model, other, explicitly_set=True)
    # a user config that leaves the resolution at the volumes' own does not conflict
    native = dataclasses.replace(model, volume=dataclasses.replace(model.volume, resolution=(0.0, 0.0, 0.0)))
    assert check_model_config(model, native, explicitly_set=True).volume.resolution == (20.0, 20.0, 20.0)


def test_network_runs_on_a_tiny_batch_without_grad_leaks():
    cfg = small_config()
    net = build_network(cfg.model, cfg.network).eval()
    image, mask = inputs((9, 9, 9), n=1)
    with torch.inference_mode():
        out = net(image, mask)
    assert out.shape == (1, 1, 7, 7, 7)
    assert np.isfinite(out.numpy()).all()
