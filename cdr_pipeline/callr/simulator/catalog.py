"""The simulated customer's world: call outcomes, destinations, scenarios, names, volumes.

Weights are relative within each table; amounts are in 1/10000 cent.
"""

from typing import NamedTuple

STATUSES: tuple[str, ...] = ("answered", "busy", "failed", "canceled", "unallocated")
STATUS_WEIGHTS = {
    "outbound": (0.58, 0.10, 0.14, 0.12, 0.06),
    "inbound": (0.64, 0.05, 0.09, 0.20, 0.02),
}
ANSWERED = STATUSES.index("answered")


class Outcome(NamedTuple):
    """How a call of one status ends: its Q.850 cause, SIP answer and who hung up."""

    status: str
    hangup_cause: int
    hangup_tech: str
    hangup_source: str
    weight: float  # within the status


OUTCOMES: tuple[Outcome, ...] = (
    Outcome("answered", 16, "SIP 200", "caller", 0.50),
    Outcome("answered", 16, "SIP 200", "callee", 0.45),
    Outcome("answered", 16, "SIP 200", "system", 0.05),
    Outcome("busy", 17, "SIP 486", "callee", 0.93),
    Outcome("busy", 17, "SIP 600", "callee", 0.07),
    Outcome("failed", 18, "SIP 408", "system", 0.30),
    Outcome("failed", 19, "SIP 480", "system", 0.35),
    Outcome("failed", 31, "SIP 480", "system", 0.15),
    Outcome("failed", 34, "SIP 503", "system", 0.10),
    Outcome("failed", 38, "SIP 502", "system", 0.05),
    Outcome("failed", 102, "SIP 504", "system", 0.05),
    Outcome("canceled", 16, "SIP 487", "caller", 0.90),
    Outcome("canceled", 127, "SIP 487", "caller", 0.07),
    Outcome("canceled", 31, "SIP 487", "caller", 0.03),
    Outcome("unallocated", 1, "SIP 404", "system", 0.90),
    Outcome("unallocated", 3, "SIP 404", "system", 0.10),
)


class Ringing(NamedTuple):
    """Seconds of ringing before the answer or the hang-up: uniform in [minimum, minimum+span)."""

    minimum: int
    span: int


RING_S = {
    "answered": Ringing(2, 23),
    "busy": Ringing(0, 7),
    "failed": Ringing(15, 46),
    "canceled": Ringing(1, 40),
    "unallocated": Ringing(0, 3),
}
MEAN_TALK_S = {"outbound": 140.0, "inbound": 210.0}
MAX_TALK_S = 4 * 3600


class BillingIncrement(NamedTuple):
    seconds: int
    weight: float


BILLING_INCREMENTS = (
    BillingIncrement(1, 0.45),
    BillingIncrement(30, 0.20),
    BillingIncrement(60, 0.35),
)


class Destination(NamedTuple):
    """Where an outbound call goes: numbers are `prefix` followed by `digits` random digits."""

    label: str
    prefix: str
    digits: int
    rate_e4: int  # outbound price per minute
    weight: float


DESTINATIONS: tuple[Destination, ...] = (
    Destination("France - Mobile", "+336", 8, 18_500, 0.28),
    Destination("France - Fixed", "+331", 8, 7_500, 0.20),
    Destination("United Kingdom - Mobile", "+447", 9, 22_333, 0.10),
    Destination("United Kingdom - Fixed", "+4420", 8, 9_875, 0.07),
    Destination("Germany - Mobile", "+4915", 9, 31_250, 0.07),
    Destination("Spain - Fixed", "+349", 8, 11_111, 0.06),
    Destination("Belgium - Mobile", "+324", 8, 28_900, 0.06),
    Destination("Switzerland - Mobile", "+417", 8, 45_000, 0.05),
    Destination("United States - Fixed", "+1212", 7, 12_345, 0.05),
    Destination("Côte d'Ivoire - Mobile", "+22507", 8, 123_457, 0.04),
    Destination("Réunion - Mobile", "+262692", 6, 60_000, 0.02),
)


class OutboundScenario(NamedTuple):
    """A customer scenario placing calls, and the number and name it calls from."""

    name: str
    sid: str
    type_name: str
    type_version: str
    payment_type: str
    caller_number: str
    caller_name: str
    weight: float


class InboundScenario(NamedTuple):
    """A customer scenario answering calls on `number`, and what an answered minute costs."""

    name: str
    sid: str
    type_name: str
    type_version: str
    payment_type: str
    number: str
    label: str
    rate_e4: int
    weight: float


OUTBOUND_SCENARIOS: tuple[OutboundScenario, ...] = (
    OutboundScenario("Outbound campaign", "q7r2k9", "Actions", "1.0", "postpaid",
                     "+33184880001", "Front desk", 0.45),
    OutboundScenario("Rappels de rendez-vous", "m4n8p2", "Actions", "2.0", "prepaid",
                     "+33972100200", "Cabinet Dr. Lefèvre", 0.30),
    OutboundScenario("Sales, EMEA", "s9d3f1", "Actions", "1.0", "postpaid", "+442079460000",
                     "Sales, London", 0.20),
    OutboundScenario("Legacy dialer", "l0g4c7", "Legacy", "0.9", "prepaid", "0184880002", "",
                     0.05),
)  # fmt: skip
INBOUND_SCENARIOS: tuple[InboundScenario, ...] = (
    InboundScenario("Support, level 1", "z1x8c3", "Actions", "1.0", "postpaid", "+33184880001",
                    "France - Fixed", 7_500, 0.45),
    InboundScenario('Standard "Accueil"', "a5b6c7", "Actions", "2.0", "postpaid",
                    "+33184880010", "France - Fixed", 7_500, 0.25),
    InboundScenario("UK hotline", "u2k9h4", "Actions", "1.0", "prepaid", "+447700900123",
                    "United Kingdom - Mobile", 22_333, 0.20),
    InboundScenario("Numéro vert", "n0v3r7", "Actions", "1.1", "postpaid", "0800123456",
                    "France - Toll-free", 27_500, 0.10),
)  # fmt: skip
INBOUND_CREDIT_RATE_E4 = 12_750  # revenue share on an answered inbound minute


class CallerName(NamedTuple):
    name: str
    weight: float


CALLER_NAMES: tuple[CallerName, ...] = (
    CallerName("", 0.40),
    CallerName("Zoë Ørsted", 0.06),
    CallerName("株式会社 東京商事", 0.05),
    CallerName('O\'Neil, "Pat"', 0.05),
    CallerName("Dupont, Jean-Pierre", 0.06),
    CallerName("María José Núñez", 0.05),
    CallerName("Ľubomír Šťastný", 0.04),
    CallerName("Björk Guðmundsdóttir", 0.04),
    CallerName('ACME "Paris" SARL', 0.05),
    CallerName("Nguyễn Văn An", 0.04),
    CallerName("Séverine L'Hôte", 0.05),
    CallerName("Müller & Söhne GmbH", 0.05),
    CallerName("محمد علي", 0.03),
    CallerName("0033 Reception", 0.02),
    CallerName("Accueil\nSiège", 0.01),  # a newline inside a quoted field
)
CLIR_RATE = {"inbound": 0.06, "outbound": 0.01}
NATIONAL_FORMAT_RATE = 0.12  # numbers written 06… / 0044… instead of +336… / +44…


class UtcOffset(NamedTuple):
    """A timestamp suffix; all three timestamps of a call share one."""

    suffix: str
    minutes: int
    weight: float


OFFSETS: tuple[UtcOffset, ...] = (
    UtcOffset("Z", 0, 0.60),
    UtcOffset("+01:00", 60, 0.20),
    UtcOffset("+02:00", 120, 0.10),
    UtcOffset("-05:00", -300, 0.05),
    UtcOffset("+00:00", 0, 0.05),
)
FRACTION_WEIGHTS = (0.85, 0.10, 0.05)  # whole seconds, milliseconds, microseconds

# Mean calls per direction on Monday..Sunday (before a ±10 % daily jitter).
WEEKDAY_VOLUME = {
    "outbound": (820, 880, 860, 840, 760, 380, 300),
    "inbound": (700, 760, 740, 720, 650, 420, 320),
}
# Share of the day's calls starting in each UTC hour: business hours, a lunch dip.
HOURLY_WEIGHTS = (
    1, 1, 1, 1, 1, 2, 4, 12, 38, 62, 70, 66,
    40, 46, 64, 66, 60, 48, 26, 12, 7, 4, 2, 1,
)  # fmt: skip
