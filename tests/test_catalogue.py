import pytest
from pydantic_core import PydanticCustomError

from sfproxy.catalogue import (
    BUILTIN_MODELS,
    Catalogue,
    ModelSpec,
    fit_size,
    plan_batches,
    validate_size,
)
from sfproxy.validation import invalid_param

from .conftest import OPENAI_SIZES

catalogue = Catalogue()
QWEN = catalogue.spec("Qwen/Qwen-Image")
KOLORS = catalogue.spec("Kwai-Kolors/Kolors")
EDIT = catalogue.spec("Qwen/Qwen-Image-Edit")
UNKNOWN = catalogue.spec("someone/new-model")


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("256x256", "1328x1328"),
        ("512x512", "1328x1328"),
        ("1024x1024", "1328x1328"),
        ("1536x1024", "1584x1056"),
        ("1024x1536", "1056x1584"),
        ("1792x1024", "1664x928"),
        ("1024x1792", "928x1664"),
        ("16:9", "1664x928"),
        ("4:3", "1472x1140"),
        ("1328x1328", "1328x1328"),
        (None, "1328x1328"),
        ("auto", "1328x1328"),
    ],
)
def test_qwen_image_sizes_fit_the_nearest_aspect_ratio(requested, expected):
    assert fit_size(QWEN, requested) == expected


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        ("256x256", "1024x1024"),
        ("512x512", "1024x1024"),
        ("1024x1024", "1024x1024"),
        # Kolors has no landscape size: square is the nearest ratio.
        ("1536x1024", "1024x1024"),
        ("1792x1024", "1024x1024"),
        # 2:3 sits between 3:4 (two sizes, the larger nearer in pixels) and 1:2.
        ("1024x1536", "960x1280"),
        ("1024x1792", "720x1280"),
        ("768x1024", "768x1024"),
        ("9:16", "720x1280"),
        ("1:2", "720x1440"),
        (None, "1024x1024"),
    ],
)
def test_kolors_sizes_fit_the_nearest_aspect_ratio(requested, expected):
    assert fit_size(KOLORS, requested) == expected


def test_every_openai_size_maps_into_each_models_table():
    for spec in (QWEN, KOLORS):
        assert spec.sizes is not None
        for size in OPENAI_SIZES:
            assert fit_size(spec, size) in spec.sizes


def test_ties_on_ratio_go_to_the_nearest_pixel_count():
    assert fit_size(KOLORS, "600x800") == "768x1024"
    assert fit_size(KOLORS, "1200x1600") == "960x1280"


def test_edit_models_get_no_image_size():
    assert fit_size(EDIT, "1024x1024") is None
    assert fit_size(EDIT, None) is None


def test_unknown_models_get_the_size_as_asked():
    assert fit_size(UNKNOWN, "1000x600") == "1000x600"
    assert fit_size(UNKNOWN, None) is None
    width, height = (int(side) for side in fit_size(UNKNOWN, "16:9").split("x"))
    assert abs(width / height - 16 / 9) < 0.02
    assert width % 16 == 0 and height % 16 == 0


@pytest.mark.parametrize(
    "bad", ["abc", "0x0", "99999x99999", "1024", "1024x", "10x10", "0:1", "1:0"]
)
def test_bad_sizes_are_structured_problems(bad):
    with pytest.raises(PydanticCustomError) as caught:
        validate_size(bad)
    assert caught.value.type in {"invalid_size", "size_out_of_range", "invalid_aspect_ratio"}
    assert caught.value.context is not None and caught.value.context["value"] == bad
    # The problem never names a parameter: the mapper does, as the client spelled it.
    error = invalid_param("aspect_ratio", caught.value)
    assert error.param == "aspect_ratio"
    assert error.message.startswith(f"Invalid 'aspect_ratio': '{bad}'")


def test_valid_sizes_pass_validation():
    assert validate_size("1024x768") == "1024x768"
    assert validate_size(" 16:9 ") == "16:9"
    assert validate_size("auto") is None
    assert validate_size(None) is None


@pytest.mark.parametrize(
    ("spec", "n", "batch_size", "expected"),
    [
        (QWEN, 1, None, [1]),
        (QWEN, 4, None, [1, 1, 1, 1]),
        # Qwen-Image cannot batch: a batch becomes separate calls.
        (QWEN, 1, 2, [1, 1]),
        (KOLORS, 1, 3, [3]),
        (KOLORS, 4, None, [4]),
        (KOLORS, 5, None, [3, 2]),
        (KOLORS, 4, 2, [2, 2]),
        (KOLORS, 1, 6, [3, 3]),
        (UNKNOWN, 3, None, [1, 1, 1]),
        (UNKNOWN, 1, 2, [2]),
    ],
)
def test_plan_batches(spec, n, batch_size, expected):
    assert plan_batches(spec, n, batch_size) == expected


def test_overrides_merge_into_builtin_models_and_add_new_ones():
    custom = Catalogue(
        [
            "Qwen/Qwen-Image",
            ModelSpec(id="Kwai-Kolors/Kolors", default_size="768x1024"),
            ModelSpec(id="acme/painter", sizes=("512x512",), default_size="512x512"),
        ]
    )
    assert [spec.id for spec in custom.listed] == [
        "Qwen/Qwen-Image",
        "Kwai-Kolors/Kolors",
        "acme/painter",
    ]
    kolors = custom.spec("Kwai-Kolors/Kolors")
    assert kolors.default_size == "768x1024"
    assert kolors.max_batch_size == 4  # kept from the built-in entry
    assert fit_size(custom.spec("acme/painter"), "1024x1024") == "512x512"
    assert custom.default_model == "Qwen/Qwen-Image"


def test_without_overrides_the_builtin_models_are_listed():
    assert Catalogue().listed == BUILTIN_MODELS
    assert Catalogue().default_model == "Qwen/Qwen-Image"


def test_parameters_a_model_ignores_are_known():
    assert KOLORS.accepts("guidance_scale") and not KOLORS.accepts("cfg")
    assert QWEN.accepts("cfg") and not QWEN.accepts("guidance_scale")
    assert UNKNOWN.accepts("cfg") and UNKNOWN.accepts("guidance_scale")


def test_unknown_tuning_parameters_are_refused_in_model_entries():
    with pytest.raises(ValueError, match="unknown parameter"):
        ModelSpec(id="x", params=frozenset({"temperature"}))
