"""`--model` references to registered versions, in the forms MLflow's models:/ URIs use."""

import pytest

from ml.registry import ModelRef, parse_model_ref


@pytest.mark.parametrize(("text", "expected"), [
    ("rl_agent@champion", ModelRef("rl_agent", alias="champion")),
    ("models:/rl_agent@challenger", ModelRef("rl_agent", alias="challenger")),
    ("rl_agent@canary-2", ModelRef("rl_agent", alias="canary-2")),
    ("rl_agent/3", ModelRef("rl_agent", version="3")),
    ("models:/rl_agent/3", ModelRef("rl_agent", version="3")),
    ("rl_agent@3", ModelRef("rl_agent", version="3")),
    ("rl_agent@v3", ModelRef("rl_agent", version="3")),  # MLflow's reserved version alias
    ("rl_agent/latest", ModelRef("rl_agent", version="latest")),
    ("rl_agent@latest", ModelRef("rl_agent", version="latest")),
    ("rl_agent", ModelRef("rl_agent", alias="champion")),
    ("predictor@champion", ModelRef("predictor", alias="champion")),
])
def test_the_forms_mlflow_uses(text, expected):
    assert parse_model_ref(text) == expected
    assert parse_model_ref(str(expected)) == expected  # str() gives a form that parses back


@pytest.mark.parametrize(("text", "says"), [
    ("", "NAME@ALIAS or NAME/VERSION"),
    ("agent@champion", "one of predictor, rl_agent"),
    ("rl_agent@", "NAME@ALIAS or NAME/VERSION"),
    ("rl_agent/3/4", "NAME@ALIAS or NAME/VERSION"),
    ("rl_agent/Production", "stages like 'Production' are not used here"),
    ("runs:/abc/model", "one of predictor, rl_agent"),
])
def test_anything_else_is_refused_with_the_forms(text, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(")) as refused:
        parse_model_ref(text)
    assert "rl_agent@champion" in str(refused.value)
