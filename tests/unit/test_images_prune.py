"""`dockertask images prune`: which of the images dockertask made nothing names any more."""

from __future__ import annotations

from dockertask.backends.base import ImageInfo
from dockertask.images.prune import unused

DEFAULT = "dockertask-runtime:py3.11-aaaa"


def _image(tag: str | None, created: int, **labels: str) -> ImageInfo:
    return ImageInfo(ref=tag or "sha256:x", id=f"sha256:{tag}{created}", labels=labels, created=str(created),
                     tags=(tag,) if tag else ())


IMAGES = [
    _image(DEFAULT, 5, **{"dockertask.kind": "default"}),
    _image("dockertask-runtime:py3.11-old0", 1, **{"dockertask.kind": "default"}),
    _image("dockertask-runtime:py3.9-bbbb", 1, **{"dockertask.kind": "default"}),  # another host's Python
    _image("dockertask-suite:1234", 9, **{"dockertask.kind": "default", "dockertask.suite": "1"}),
    _image("app:v2", 8, **{"dockertask.kind": "imagespec", "dockertask.imagespec": "app"}),
    _image("app:v1", 3, **{"dockertask.kind": "imagespec", "dockertask.imagespec": "app"}),
    _image("tool:v1", 2, **{"dockertask.kind": "imagespec", "dockertask.imagespec": "tool"}),
    _image(None, 1, **{"dockertask.kind": "imagespec", "dockertask.imagespec": "app"}),
]


def _refs(pruned: list[tuple[ImageInfo, str]]) -> set[str]:
    return {image.tags[0] if image.tags else "<untagged>" for image, _ in pruned}


def test_without_files_the_newest_build_of_each_imagespec_and_the_current_runtime_stay() -> None:
    assert _refs(unused(IMAGES, DEFAULT)) == {"dockertask-runtime:py3.11-old0", "dockertask-suite:1234", "app:v1",
                                              "<untagged>"}


def test_with_files_only_what_their_imagespecs_build_stays() -> None:
    assert _refs(unused(IMAGES, DEFAULT, keep={"app:v1"})) == {
        "dockertask-runtime:py3.11-old0", "dockertask-suite:1234", "app:v2", "tool:v1", "<untagged>"}


def test_each_is_given_a_reason() -> None:
    reasons = {image.tags[0]: why for image, why in unused(IMAGES, DEFAULT) if image.tags}
    assert "older build of ImageSpec 'app'" in reasons["app:v1"]
    assert "made again from the checkout" in reasons["dockertask-suite:1234"]
    assert DEFAULT in reasons["dockertask-runtime:py3.11-old0"]
