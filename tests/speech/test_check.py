"""What is missing to run the local engines is named with the command that installs it."""

from __future__ import annotations

from router.speech.check import APT_FIX, PIP_FIX, missing


def test_nothing_missing_says_nothing() -> None:
    assert missing(which=lambda _: "/usr/bin/espeak-ng", has_module=lambda _: True) == []


def test_a_missing_program_names_its_package() -> None:
    [line] = missing(which=lambda _: None, has_module=lambda _: True)
    assert "espeak-ng" in line
    assert APT_FIX in line


def test_missing_packages_name_the_extra() -> None:
    [line] = missing(which=lambda _: "/bin/x", has_module=lambda name: name != "pocketsphinx")
    assert "pocketsphinx" in line
    assert PIP_FIX in line


def test_only_what_is_asked_for_is_needed() -> None:
    def absent(_: str) -> bool:
        return False

    assert missing(stt=False, tts=False, which=lambda _: None, has_module=absent) == []
    [line] = missing(stt=False, which=lambda _: "/bin/x", has_module=lambda n: n != "soxr")
    assert "soxr" in line
    assert (
        missing(stt=False, which=lambda _: "/bin/x", has_module=lambda n: n != "pocketsphinx") == []
    )
