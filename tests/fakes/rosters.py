"""Roster files for tests: the same three fictional staff members, on call all week or on weekday days only."""

from __future__ import annotations

TEAM = """
supervisor = "dana"

[[staff]]
id = "avery"
name = "Avery Example"
phone = "+16175550101"
hubspot_owner_id = "1001"

[[staff]]
id = "blake"
name = "Blake Example"
phone = "+16175550102"
hubspot_owner_id = "1002"

[[staff]]
id = "dana"
name = "Dana Example"
phone = "+16175550104"
hubspot_owner_id = "1004"
"""

# One ladder all week (Avery on call, Blake second, Dana supervisor), so who is on call does not depend on when a
# test runs.
ALWAYS_ON = TEAM + """
[[shifts]]
name = "always"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "00:00"
on_call = "avery"
second = "blake"
"""


def days_only(*days: str) -> str:
    """Avery and Blake on 08:00-20:00 of `days` only: every other hour is after hours (the supervisor's)."""
    listed = ", ".join(f'"{day}"' for day in days)
    return TEAM + f"""
[[shifts]]
name = "days"
days = [{listed}]
start = "08:00"
end = "20:00"
on_call = "avery"
second = "blake"
"""
