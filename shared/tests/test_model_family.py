"""A model file's family from its name, as a table."""

import pytest

from comfy_shared.model_family import ModelFamily, model_family, name_hash8


@pytest.mark.parametrize(
    ("file_name", "family"),
    [
        ("v1-5-pruned-emaonly-fp16.safetensors", ModelFamily.SD15),
        ("sd15/dreamshaper_8_sd1.5.safetensors", ModelFamily.SD15),
        ("sd_xl_base_1.0.safetensors", ModelFamily.SDXL),
        ("juggernautXL_v8Rundiffusion.safetensors", ModelFamily.SDXL),
        ("ponyDiffusionV6.safetensors", ModelFamily.SDXL),
        ("sd3.5_large_fp8_scaled.safetensors", ModelFamily.SD3),
        ("flux1-dev-fp8.safetensors", ModelFamily.FLUX),
        ("wan2.1_t2v_1.3B_fp16.safetensors", ModelFamily.VIDEO),
        ("svd_xt.safetensors", ModelFamily.VIDEO),
        ("hunyuan_video_t2v_720p_bf16.safetensors", ModelFamily.VIDEO),
        ("ltx-video-2b-v0.9.safetensors", ModelFamily.VIDEO),
        ("checkpoints\\animagineXL_v31.safetensors", ModelFamily.SDXL),
        ("4x-UltraSharp.pth", ModelFamily.OTHER),
        ("taesd_decoder.pth", ModelFamily.OTHER),
    ],
)
def test_the_family_of_a_model_file(file_name: str, family: ModelFamily) -> None:
    assert model_family(file_name) is family


def test_the_name_hash_is_short_stable_and_hides_the_name() -> None:
    assert name_hash8("flux1-dev.safetensors") == name_hash8("flux1-dev.safetensors")
    assert len(name_hash8("flux1-dev.safetensors")) == 8
    assert name_hash8("a.safetensors") != name_hash8("b.safetensors")
