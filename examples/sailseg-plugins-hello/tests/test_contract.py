"""The standard transform contract (sailseg.testing), in one line plus samples."""

from sailseg_plugins_hello import TitleCase

from sailseg.testing import get_transform_test_class

# -- start contract --
TestTitleCaseContract = get_transform_test_class(
    TitleCase,
    config={"fields": ["first_name", "name"]},
    events=[{"type": "identify", "userId": "u-1", "traits": {"first_name": "ada", "plan": "pro"}}],
    expected=[{"type": "identify", "userId": "u-1", "traits": {"first_name": "Ada", "plan": "pro"}}],
)
# -- end contract --
