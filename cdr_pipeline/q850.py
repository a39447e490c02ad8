"""The ITU-T Q.850 cause table: code -> name and class, for `hangup_cause_name/_class`.

Source: ITU-T Recommendation Q.850 (05/1998), "Usage of cause and location in the Digital
Subscriber Signalling System No. 1 and the Signalling System No. 7 ISDN User Part", Table 1
(cause values), as amended (Amendment 1 added cause 24). Names follow the standard's wording;
the "(national use)" qualifier the standard puts on causes 2, 5 and 91 is left out of the name.

Values the standard does not define are still accepted (the contract keeps unknown codes):

- a code in 0..127 that Q.850 leaves unassigned (e.g. 0, 10-13, 15, 54) gets the name
  `UNKNOWN_CAUSE_NAME` and its class from the class bits, because the class is a property of the
  code's bit pattern, not of its definition;
- a code outside 0..127 (e.g. 999 or -1, which some platforms emit) gets `UNKNOWN_CAUSE_NAME`
  and the class `UNKNOWN_CLASS`. (`hangup_cause` is a SMALLINT: the normaliser rejects a value
  outside -32768..32767, with a reason, since it cannot be stored.)

Class bits: a cause value is 7 bits; its top 3 bits (``code >> 4``) are the class. Classes 000 and
001 are both "normal event" (0-31), then resource unavailable (32-47), service or option not
available (48-63), service or option not implemented (64-79), invalid message (80-95), protocol
error (96-111) and interworking (112-127).
"""

import hashlib

import polars as pl

from cdr_pipeline.schema import Q850_SCHEMA

UNKNOWN_CAUSE_NAME = "Unknown cause (not defined by Q.850)"
UNKNOWN_CLASS = "unknown"

# Index = class bits (code >> 4).
_CLASS_BY_BITS: tuple[str, ...] = (
    "normal event",
    "normal event",
    "resource unavailable",
    "service or option not available",
    "service or option not implemented",
    "invalid message",
    "protocol error",
    "interworking",
)

Q850_CAUSES: dict[int, str] = {
    1: "Unallocated (unassigned) number",
    2: "No route to specified transit network",
    3: "No route to destination",
    4: "Send special information tone",
    5: "Misdialled trunk prefix",
    6: "Channel unacceptable",
    7: "Call awarded and being delivered in an established channel",
    8: "Preemption",
    9: "Preemption – circuit reserved for reuse",
    14: "QoR: ported number",
    16: "Normal call clearing",
    17: "User busy",
    18: "No user responding",
    19: "No answer from user (user alerted)",
    20: "Subscriber absent",
    21: "Call rejected",
    22: "Number changed",
    23: "Redirection to new destination",
    24: "Call rejected due to feature at the destination",
    25: "Exchange routing error",
    26: "Non-selected user clearing",
    27: "Destination out of order",
    28: "Invalid number format (address incomplete)",
    29: "Facility rejected",
    30: "Response to STATUS ENQUIRY",
    31: "Normal, unspecified",
    34: "No circuit/channel available",
    38: "Network out of order",
    39: "Permanent frame mode connection out of service",
    40: "Permanent frame mode connection operational",
    41: "Temporary failure",
    42: "Switching equipment congestion",
    43: "Access information discarded",
    44: "Requested circuit/channel not available",
    46: "Precedence call blocked",
    47: "Resource unavailable, unspecified",
    49: "Quality of service not available",
    50: "Requested facility not subscribed",
    53: "Outgoing calls barred within CUG",
    55: "Incoming calls barred within CUG",
    57: "Bearer capability not authorized",
    58: "Bearer capability not presently available",
    62: "Inconsistency in designated outgoing access information and subscriber class",
    63: "Service or option not available, unspecified",
    65: "Bearer capability not implemented",
    66: "Channel type not implemented",
    69: "Requested facility not implemented",
    70: "Only restricted digital information bearer capability is available",
    79: "Service or option not implemented, unspecified",
    81: "Invalid call reference value",
    82: "Identified channel does not exist",
    83: "A suspended call exists, but this call identity does not",
    84: "Call identity in use",
    85: "No call suspended",
    86: "Call having the requested call identity has been cleared",
    87: "User not member of CUG",
    88: "Incompatible destination",
    90: "Non-existent CUG",
    91: "Invalid transit network selection",
    95: "Invalid message, unspecified",
    96: "Mandatory information element is missing",
    97: "Message type non-existent or not implemented",
    98: "Message not compatible with call state or message type non-existent or not implemented",
    99: "Information element/parameter non-existent or not implemented",
    100: "Invalid information element contents",
    101: "Message not compatible with call state",
    102: "Recovery on timer expiry",
    103: "Parameter non-existent or not implemented, passed on",
    110: "Message with unrecognized parameter, discarded",
    111: "Protocol error, unspecified",
    127: "Interworking, unspecified",
}


def q850_rows() -> list[tuple[int, str, str]]:
    """The table's rows, (code, name, class), ordered by code."""
    return [(code, Q850_CAUSES[code], cause_class(code)) for code in sorted(Q850_CAUSES)]


def cause_class(code: int) -> str:
    """The Q.850 class of a cause value, from its class bits.

    Args:
        code: a cause value; anything outside 0..127 has no class bits.

    Returns:
        The class name (e.g. `normal event` for 16), or `unknown` outside 0..127.
    """
    if 0 <= code <= 127:
        return _CLASS_BY_BITS[code >> 4]
    return UNKNOWN_CLASS


def cause_name(code: int) -> str:
    """The Q.850 name of a cause value, or `UNKNOWN_CAUSE_NAME` if the standard defines none."""
    return Q850_CAUSES.get(code, UNKNOWN_CAUSE_NAME)


def q850_frame() -> pl.DataFrame:
    """The `q850_causes` table: every cause Q.850 defines, ordered by code.

    Returns:
        A frame with columns `cause_code` (Int16), `cause_name`, `cause_class`.
    """
    return pl.DataFrame(q850_rows(), schema=Q850_SCHEMA, orient="row")


# A fingerprint of the table's content: the code version of the `q850_causes` asset, so the
# table is materialised again only when this module changes it.
TABLE_VERSION = hashlib.sha256(repr(q850_rows()).encode()).hexdigest()[:16]


def cause_class_expr(code: pl.Expr) -> pl.Expr:
    """Vectorised `cause_class`: null stays null, outside 0..127 is `unknown`."""
    expr = pl.lit(UNKNOWN_CLASS)
    for bits, name in reversed(list(enumerate(_CLASS_BY_BITS))):
        expr = (
            pl.when(code.is_between(bits * 16, bits * 16 + 15)).then(pl.lit(name)).otherwise(expr)
        )
    return pl.when(code.is_null()).then(pl.lit(None, pl.String)).otherwise(expr)


def with_cause_columns(frame: pl.LazyFrame, code: str, name: str, class_: str) -> pl.LazyFrame:
    """Add the Q.850 name and class of the cause code column `code` to `frame`.

    A left join on the small cause table, which the streaming engine runs natively (unlike
    `replace_strict`, which falls back to the in-memory engine). Row order is kept.

    Args:
        frame: rows with an integer column `code`.
        code: the cause code column.
        name: the name column to add (null code -> null, undefined code -> UNKNOWN_CAUSE_NAME).
        class_: the class column to add (null code -> null, outside 0..127 -> `unknown`).

    Returns:
        `frame` with the two columns appended.
    """
    causes = (
        q850_frame()
        .lazy()
        .select(
            pl.col("cause_code").cast(pl.Int64).alias("__cause_code"),
            pl.col("cause_name").alias("__cause_name"),
        )
    )
    return (
        frame.with_columns(pl.col(code).cast(pl.Int64).alias("__cause_code"))
        .join(causes, on="__cause_code", how="left", maintain_order="left")
        .with_columns(
            pl.when(pl.col(code).is_null())
            .then(pl.lit(None, pl.String))
            .otherwise(pl.col("__cause_name").fill_null(UNKNOWN_CAUSE_NAME))
            .alias(name),
            cause_class_expr(pl.col(code)).alias(class_),
        )
        .drop("__cause_code", "__cause_name")
    )
