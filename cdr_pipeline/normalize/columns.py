"""Internal column names of the normaliser's queries and scratch files.

The prefixes keep raw text apart from typed columns of the same name (`direction`, `status` and
`callee` are both a Callr field and a `calls` column).
"""

RAW = "__raw__"  # + Callr field: the field's text as read
EXTRA = "__extra__"  # + position: a column that is no Callr field
ROW = "__source_row"  # 1-based data record number in its file
ORD = "__ord"  # order key across the partition's files: file index * ORD_FILE_SHIFT + ROW
FILE_DIRECTION = "__file_direction"  # the direction the file was requested for
JSON = "__raw_json"
REJECTED = "__rejected"
ERASED = "__erased"  # a number of the row is on the erasure list
EMPTY_ROW = "__empty_row"
COUNT = "__count"
KEPT = "__kept"  # prefix of the kept row's columns, in the dedup
IDENTICAL = "__identical"
DUPLICATE_REASON = "__duplicate_reason"

ORD_FILE_SHIFT = 1 << 40
