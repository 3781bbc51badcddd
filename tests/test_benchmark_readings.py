"""benchmarks/RESULTS.md: a rerun replaces a section's generated text and keeps the
hand-written reading beside it, flagged stale once its numbers changed."""

from benchmarks import results


def test_a_rerun_keeps_the_reading_and_flags_it_when_the_numbers_move(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    results.write_section("k", "K", "| a | 1 |")
    results.write_section("other", "Other", "x")
    text = results.RESULTS.read_text().replace(
        "<!-- k:end -->", "<!-- k:end -->\n\n<!-- k:reading 0 -->\nOne is good.\n"
        "<!-- k:reading-end -->")
    results.RESULTS.write_text(text)
    results.reread("k")
    signed = results.RESULTS.read_text()
    results.write_section("k", "K", "| a | 1 |")  # the same numbers
    assert results.RESULTS.read_text() == signed
    for _ in range(2):
        results.write_section("k", "K", "| a | 2 |")
    moved = results.RESULTS.read_text()
    assert "| a | 2 |" in moved and "One is good." in moved and "<!-- other:start -->" in moved
    assert moved.count("**Stale:**") == 1
    results.reread("k")
    assert "**Stale:**" not in results.RESULTS.read_text()
    assert "One is good." in results.RESULTS.read_text()


def test_the_index_lists_every_section_with_its_command_once(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "RESULTS", tmp_path / "RESULTS.md")
    results.write_section("k", "K: one", "Command: `python -m benchmarks.k --seeds 3` (here)\n")
    results.write_section("o.1", "Other", "no command")
    text = results.RESULTS.read_text()
    assert text.count("<!-- index:start -->") == 1
    assert "| [K: one](#k-one) | `python -m benchmarks.k --seeds 3` |" in text
    assert "| [Other](#other) | - |" in text
    assert text.index("<!-- index:end -->") < text.index("<!-- k:start -->")
    assert results.with_index(text) == text  # rebuilding changes nothing
