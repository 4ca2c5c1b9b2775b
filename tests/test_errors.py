import pytest

from mmalign.errors import MissingDependencyError, require


def test_missing_optional_dependency_names_the_extra():
    with pytest.raises(MissingDependencyError, match=r"pip install 'mmalign\[demo\]'"):
        require("surely_not_an_installed_module", extra="demo")
    assert require("json").dumps([]) == "[]"
