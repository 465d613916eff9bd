import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from jaxreviews.data.readers import write_tang
from jaxreviews.data.types import Review

TOOL = Path(__file__).resolve().parents[1] / "tools" / "inspect_data.py"


def load_tool():
    spec = importlib.util.spec_from_file_location("inspect_data", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def amazon_line(user, product, overall, text=None, summary=None):
    record = {"reviewerID": user, "asin": product, "overall": overall, "summary": summary}
    if text is not None:
        record["reviewText"] = text
    return json.dumps(record)


def test_inspect_amazon_file_as_a_script(tmp_path):
    path = tmp_path / "beauty.json"
    path.write_text("\n".join([
        amazon_line("A1", "B1", 5.0, "Love it. Smells great", "Five Stars"),
        amazon_line("A1", "B2", 5.0, "Love it. Smells great", "Five Stars"),  # the same review, a variant
        amazon_line("A2", "B1", 1.0, "Awful!", "One Star"),
        amazon_line("A3", "B1", 4.0, None, "Four Stars"),  # no reviewText
    ]) + "\n")
    result = subprocess.run([sys.executable, str(TOOL), str(path)], capture_output=True, text=True, check=True)
    *summary, last = result.stdout.strip().splitlines()
    assert any("4 by 3 users about 2 products" in line for line in summary)
    stats = json.loads(last)
    assert stats["format"] == "amazon"
    assert (stats["reviews"], stats["users"], stats["products"]) == (4, 3, 2)
    assert stats["ratings"] == {"1": 1, "4": 1, "5": 2}
    assert stats["sentences_per_review"] == {"mean": 1.5, "p50": 1.5, "p95": 2.0, "max": 2}
    # love it . | smells great ; awful ! ; four stars (the summary stands in for the missing text)
    assert stats["words_per_review"]["max"] == 5 and stats["words_per_review"]["mean"] == 3.5
    assert stats["raw_words_per_review"] == {"mean": 2.25, "p50": 2.5, "p95": 4.0, "max": 4}  # 4 4 1 0
    assert stats["vocabulary_size"] == 9
    assert stats["duplicates"] == {"duplicate_reviews": 1, "groups_with_copies": 1,
                                   "distinct_user_text_rating": 3, "largest_group": 2}
    assert stats["bad_lines"] == {"count": 0, "by_kind": {}}
    assert stats["lines_without_text"] == 1


def test_inspect_strict_stops_at_a_bad_line_and_lenient_counts_it(tmp_path, capsys):
    tool = load_tool()
    path = tmp_path / "yelp.txt"
    write_tang(path, [Review("u1", "p1", 5.0, (("good", "."),)), Review("u2", "p1", 3.0, (("ok",),))])
    with path.open("a") as file:
        file.write("u3\t\tp2\t\t7\t\ttoo high\n" "u4\t\tp2\n")
    assert tool.main([str(path), "--rating-max=5"]) == 1
    assert f"{path}:3: rating 7 outside the rating range 1..5" in capsys.readouterr().err

    assert tool.main([str(path), "--format=tang", "--lenient", "--rating-max=5"]) == 0
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["reviews"] == 2 and stats["ratings"] == {"3": 1, "5": 1}
    assert stats["bad_lines"] == {"count": 2, "by_kind": {"rating out of range": 1, "wrong field count": 1}}
    assert "lines_without_text" not in stats


@pytest.mark.parametrize("content", ["", "1\t2\t3\t0\n"])
def test_inspect_ratings_and_empty_files(tmp_path, capsys, content):
    tool = load_tool()
    path = tmp_path / "u.data"
    path.write_text(content)
    code = tool.main([str(path)])
    if not content:
        assert code == 1 and "empty file" in capsys.readouterr().err
        return
    stats = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert stats["format"] == "ratings" and stats["reviews"] == 1
    assert stats["words_per_review"]["max"] == 0 and stats["reviews_without_sentences"] == 1
