import pandas as pd
import pytest

from ml.predictor.data import DataError, load_table


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_trace_loads_with_its_interval(small_trace):
    table = load_table(small_trace, target="requests")
    assert table.interval_seconds == 60
    assert table.numeric == ("requests",)
    assert table.rows == 3 * 1440 - 120
    assert len(table.fingerprint) == 16


@pytest.mark.parametrize(
    "text, target, message",
    [
        ("time,requests\n2024-01-01 00:00:00,1\n", "requests", "missing timestamp column 'timestamp'"),
        ("timestamp,count\n2024-01-01 00:00:00,1\n", "requests",
         "missing target column 'requests'; the columns are ['timestamp', 'count']"),
        ("timestamp,requests\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,lots\n", "requests",
         "row 2: column 'requests' value 'lots' is not a number"),
        ("timestamp,requests,queue\n2024-01-01 00:00:00,1,3\n2024-01-01 00:01:00,2,x\n", "requests",
         "row 2: column 'queue' value 'x' is not a number"),
        ("timestamp,requests\n2024-01-01 00:00:00,1\nsoon,2\n", "requests",
         "row 2: column 'timestamp' value 'soon' is not a timestamp"),
        ("timestamp,requests\n2024-01-01 00:00:00,1\n2024-01-01 00:00:00,2\n", "requests",
         "timestamp 2024-01-01 00:00:00 appears 2 times"),
        ("timestamp,requests\n2024-01-01 00:00:00,1\n2024-01-01 00:01:00,\n", "requests",
         "target column 'requests' has 1 empty values"),
        ("timestamp,requests\n", "requests", "has no rows"),
        ("", "requests", "the file is empty"),
        ("", None, "the file is empty"),
    ],
)
def test_bad_input_names_the_column_and_row(tmp_path, text, target, message):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as error:
        load_table(path, target=target)
    assert message in str(error.value) and str(path) in str(error.value)


def test_text_columns_are_not_features_and_parquet_loads(tmp_path):
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=5, freq="min", tz="UTC"),
        "requests": [1, 2, 3, 4, 5],
        "host": ["a", "b", "a", "b", "a"],
    })
    path = tmp_path / "t.parquet"
    frame.to_parquet(path)
    table = load_table(path, target="requests")
    assert table.numeric == ("requests",)
    assert table.rows == 5
