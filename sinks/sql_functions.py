"""The ClickHouse functions a query of the SQL endpoint may call: an allow-list of names,
by family. Anything not named here is refused (`sql_guard`), so a function ClickHouse adds
tomorrow is refused until someone reads what it does and adds it. Left out on purpose:
everything that reads or writes outside the rows of the tables named (`file`, `url`,
`s3`, `remote*`, `input`, `executable`, `dictGet*`, `joinGet*`, `getSetting`,
`getServerSetting`, `currentUser`, `hostName`, `filesystem*`, `getMacro`, `serverUUID`,
`uptime`, `shardNum`, `throwIf`, `sleep*`, `runningDifference` on foreign
blocks, `initializeAggregation`, `transactionID`, `globalVariable`, `identity` tricks, any
`*Dictionary*`/`*Cluster*`/`*Database*`/`*Table*` function).

`version()` and `timezone()` stay: clickhouse-connect asks for them when it connects.

Names are compared case-insensitively (ClickHouse itself is case-sensitive for most of
them, so a case variant is either the same function or an unknown one)."""

from __future__ import annotations

# Operators as ClickHouse's own parser names them (`EXPLAIN AST` shows `a + b` as
# `Function plus`), plus the forms sqlglot renders some syntax to.
OPERATORS = """
plus minus multiply divide modulo intDiv intDivOrZero moduloOrZero negate positiveModulo
equals notEquals less greater lessOrEquals greaterOrEquals isNotDistinctFrom
and or not xor in notIn globalIn globalNotIn nullIn notNullIn globalNullIn globalNotNullIn
like notLike ilike notILike match isNull isNotNull isNullable isZeroOrNull
tuple array arrayElement tupleElement lambda CAST _CAST accurateCast accurateCastOrNull
accurateCastOrDefault if multiIf caseWithExpression caseWithoutExpression
concat coalesce ifNull nullIf assumeNotNull toNullable exists mod columns
version timezone timeZone serverTimezone finalizeAggregation
"""

CONDITIONAL_AND_NULL = """
greatest least isNaN isFinite isInfinite ifNotFinite nullIf bitAnd bitOr bitXor bitNot
bitShiftLeft bitShiftRight bitTest bitCount
"""

MATH = """
abs sign round roundBankers roundDown roundToExp2 roundDuration roundAge floor ceil ceiling
trunc truncate sqrt cbrt exp exp2 exp10 log ln log2 log10 log1p pow power sin cos tan asin
acos atan atan2 sinh cosh tanh hypot pi e erf erfc lgamma tgamma gcd lcm max2 min2 sigmoid
widthBucket rand rand32 rand64 randCanonical
"""

TYPES = """
toInt8 toInt16 toInt32 toInt64 toInt128 toInt256 toUInt8 toUInt16 toUInt32 toUInt64
toUInt128 toUInt256 toFloat32 toFloat64 toDecimal32 toDecimal64 toDecimal128 toDecimal256
toInt8OrZero toInt16OrZero toInt32OrZero toInt64OrZero toUInt8OrZero toUInt16OrZero
toUInt32OrZero toUInt64OrZero toFloat32OrZero toFloat64OrZero toInt32OrNull toInt64OrNull
toUInt32OrNull toUInt64OrNull toFloat64OrNull toDecimal64OrNull toDecimal128OrNull
toString toFixedString toStringCutToZero toBool toUUID toUUIDOrNull toUUIDOrZero
toDate toDate32 toDateTime toDateTime32 toDateTime64 toDateOrNull toDateOrZero
toDateTimeOrNull toDateTimeOrZero toDateTime64OrNull toDate32OrNull
parseDateTimeBestEffort parseDateTimeBestEffortOrNull parseDateTimeBestEffortOrZero
parseDateTime64BestEffort parseDateTime64BestEffortOrNull parseDateTime parseDateTimeOrNull
reinterpretAsString toTypeName toColumnTypeName toLowCardinality toDecimalString
"""

DATES = """
now now64 today yesterday toYear toQuarter toMonth toWeek toISOWeek toISOYear toDayOfYear
toDayOfMonth toDayOfWeek toHour toMinute toSecond toMillisecond toUnixTimestamp
toUnixTimestamp64Milli toUnixTimestamp64Micro toUnixTimestamp64Nano
fromUnixTimestamp fromUnixTimestamp64Milli fromUnixTimestamp64Micro fromUnixTimestamp64Nano
toStartOfYear toStartOfQuarter toStartOfMonth toStartOfWeek toMonday toStartOfDay
toStartOfHour toStartOfMinute toStartOfSecond toStartOfFiveMinutes toStartOfTenMinutes
toStartOfFifteenMinutes toStartOfInterval toStartOfISOYear toLastDayOfMonth toLastDayOfWeek
toTime toRelativeYearNum toRelativeMonthNum toRelativeWeekNum toRelativeDayNum
toRelativeHourNum toRelativeMinuteNum toRelativeSecondNum toYYYYMM toYYYYMMDD
toYYYYMMDDhhmmss toTimeZone toTimezone timezoneOf timeZoneOf toUTCTimestamp
dateDiff date_diff dateAdd date_add dateSub date_sub dateTrunc date_trunc date_bin
timestampAdd timestampSub timestamp_add timestamp_sub addYears addQuarters addMonths
addWeeks addDays addHours addMinutes addSeconds addMilliseconds addInterval
subtractYears subtractQuarters subtractMonths subtractWeeks subtractDays subtractHours
subtractMinutes subtractSeconds subtractMilliseconds toIntervalYear toIntervalQuarter
toIntervalMonth toIntervalWeek toIntervalDay toIntervalHour toIntervalMinute
toIntervalSecond toIntervalMillisecond formatDateTime formatDateTimeInJodaSyntax
dateName monthName timeSlot timeSlots age makeDate makeDateTime makeDateTime64
YEAR MONTH DAY HOUR MINUTE SECOND QUARTER WEEK DAYOFWEEK DAYOFYEAR DAYOFMONTH
"""

STRINGS = """
length lengthUTF8 char_length character_length empty notEmpty lower upper lowerUTF8
upperUTF8 reverse reverseUTF8 substring substr substringUTF8 mid left right leftUTF8
rightUTF8 leftPad rightPad lpad rpad trim trimLeft trimRight trimBoth ltrim rtrim
concatWithSeparator concatAssumeInjective startsWith endsWith position positionUTF8
positionCaseInsensitive locate replaceOne replaceAll replace replaceRegexpOne
replaceRegexpAll splitByChar splitByString splitByRegexp splitByWhitespace
arrayStringConcat extract extractAll extractAllGroups extractGroups multiSearchAny
multiSearchFirstIndex multiMatchAny countSubstrings countMatches hasToken
format repeat space toValidUTF8 base64Encode base64Decode tryBase64Decode hex unhex bin
unbin normalizeUTF8NFC leftPadUTF8 rightPadUTF8 ascii initcap initcapUTF8 soundex
domain domainWithoutWWW topLevelDomain protocol path pathFull queryString fragment
cutQueryString extractURLParameter extractURLParameters decodeURLComponent
encodeURLComponent netloc firstSignificantSubdomain
"""

JSON = """
JSONHas JSONLength JSONType JSONExtract JSONExtractUInt JSONExtractInt JSONExtractFloat
JSONExtractBool JSONExtractString JSONExtractRaw JSONExtractArrayRaw JSONExtractKeys
JSONExtractKeysAndValues JSONExtractKeysAndValuesRaw JSON_VALUE JSON_QUERY JSON_EXISTS
simpleJSONHas simpleJSONExtractString simpleJSONExtractInt simpleJSONExtractUInt
simpleJSONExtractFloat simpleJSONExtractBool simpleJSONExtractRaw isValidJSON toJSONString
visitParamExtractString visitParamExtractInt visitParamExtractRaw
"""

HASHES = """
cityHash64 sipHash64 sipHash128 xxHash32 xxHash64 xxh3 farmHash64 murmurHash2_64
murmurHash3_64 murmurHash3_128 MD5 SHA1 SHA224 SHA256 SHA512 halfMD5 javaHash
hiveHash metroHash64 jumpConsistentHash crc32 CRC32 generateUUIDv4 generateUUIDv7
UUIDStringToNum UUIDNumToString UUIDv7ToDateTime
"""

ARRAYS_AND_MAPS = """
arrayJoin range arrayMap arrayFilter arrayExists arrayAll arrayCount arraySum arrayAvg
arrayMin arrayMax arrayProduct arrayFirst arrayLast arrayFirstIndex arrayLastIndex
arraySort arrayReverseSort arrayReverse arrayDistinct arrayUniq arrayEnumerate
arrayEnumerateUniq arrayEnumerateDense arrayConcat arraySlice arrayPushBack
arrayPushFront arrayPopBack arrayPopFront arrayCompact arrayZip arrayFlatten flatten
arrayIntersect arrayReduce arrayCumSum arrayDifference arrayResize arrayShuffle
arrayPartialSort arrayStringConcat arraySplit arrayFill arrayReverseFill
arrayElementOrNull arrayShingles arrayRotateLeft arrayRotateRight arrayWithConstant
arrayAUC arrayL2Norm emptyArrayString emptyArrayUInt64 emptyArrayInt64
has hasAll hasAny hasSubstr indexOf countEqual length emptyArray empty notEmpty
splitByNonAlpha tupleNames untuple tupleHammingDistance
map mapKeys mapValues mapContains mapFromArrays mapAdd mapSubtract mapApply
mapFilter mapUpdate mapConcat mapExists mapAll mapSort mapContainsKeyLike
"""

WINDOW_ONLY = """
row_number rank dense_rank percent_rank cume_dist ntile lag lead lagInFrame leadInFrame
first_value last_value nth_value
"""

# Aggregate functions; each also with the combinators below (`sumIf`, `uniqState`,
# `quantilesTDigestMerge`, `countDistinctIf`, ...).
AGGREGATES = """
count sum avg min max any anyLast anyHeavy argMin argMax uniq uniqExact uniqCombined
uniqCombined64 uniqHLL12 uniqTheta groupArray groupArrayInsertAt groupArrayMovingSum
groupArrayMovingAvg groupArraySample groupArraySorted groupUniqArray groupBitAnd groupBitOr
groupBitXor groupConcat sumMap minMap maxMap avgWeighted sumWithOverflow sumKahan
quantile quantiles quantileExact quantilesExact quantileExactWeighted quantileTiming
quantilesTiming quantileTDigest quantilesTDigest quantileTDigestWeighted quantileBFloat16
quantileDeterministic quantileInterpolatedWeighted quantileGK quantilesGK quantileDD
median medianExact medianTDigest medianTiming stddevPop stddevSamp varPop varSamp covarPop
covarSamp corr skewPop skewSamp kurtPop kurtSamp topK topKWeighted histogram
simpleLinearRegression entropy retention windowFunnel sequenceMatch sequenceCount
boundingRatio first_value last_value any_value countDistinct sumCount exponentialMovingAverage
deltaSum deltaSumTimestamp rankCorr theilsU cramersV contingency maxIntersections
largestTriangleThreeBuckets approx_top_k stddev variance
"""

COMBINATORS = (
    "if",
    "array",
    "distinct",
    "state",
    "merge",
    "mergestate",
    "ornull",
    "ordefault",
    "foreach",
    "simplestate",
    "resample",
    "map",
)


def _names(*blocks: str) -> frozenset[str]:
    return frozenset(name.lower() for block in blocks for name in block.split())


SCALAR_FUNCTIONS = _names(
    OPERATORS,
    CONDITIONAL_AND_NULL,
    MATH,
    TYPES,
    DATES,
    STRINGS,
    JSON,
    HASHES,
    ARRAYS_AND_MAPS,
    WINDOW_ONLY,
)
AGGREGATE_FUNCTIONS = _names(AGGREGATES)


def function_allowed(name: str) -> bool:
    """Whether a query may call the function `name` (a scalar, window or aggregate
    function, an aggregate with combinators, or an operator's function name)."""
    lowered = name.lower()
    if lowered in SCALAR_FUNCTIONS or lowered in AGGREGATE_FUNCTIONS:
        return True
    # Strip combinators from the end, longest first, while what remains is longer.
    for _ in range(4):
        for suffix in sorted(COMBINATORS, key=len, reverse=True):
            if lowered.endswith(suffix) and len(lowered) > len(suffix):
                lowered = lowered[: -len(suffix)]
                break
        else:
            return False
        if lowered in AGGREGATE_FUNCTIONS:
            return True
    return False
