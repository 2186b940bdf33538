# The real data sets of the benchmark scripts (docs/data.md), sourced, not run:
#   source "$(dirname "$0")/_data.sh"; data_set HYM hymenoptera     # HYM=<data root>/hymenoptera
# The data root is $TRANSFERLAB_DATA (an absolute path: the scripts change directory), else ../shared/data beside
# the checkout. A data set that is not there stops the script with one line that names the setting.
DATA_ROOT=${TRANSFERLAB_DATA:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/shared/data}

data_set() {  # VAR NAME: set VAR to the folder of data set NAME, or exit 2
  local var=$1 name=$2 where
  if [ ! -d "$DATA_ROOT/$name" ]; then
    if [ -z "${TRANSFERLAB_DATA:-}" ]; then where="TRANSFERLAB_DATA is unset and $DATA_ROOT has no $name/"
    else where="TRANSFERLAB_DATA=$TRANSFERLAB_DATA has no $name/"; fi
    echo "$(basename "$0"): error: needs the data set $name ($where): set TRANSFERLAB_DATA to the folder that" \
         "holds $name/ (see docs/data.md for where to get it)" >&2
    exit 2
  fi
  printf -v "$var" '%s' "$DATA_ROOT/$name"
}
