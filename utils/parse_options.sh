# Command-line options for recipe scripts, with Kaldi's parse_options.sh semantics.
# Sourced, never run:  . utils/parse_options.sh
#
# Every shell variable the script sets before sourcing this file is an option: `--foo-bar VALUE`
# sets foo_bar=VALUE (dashes on the command line, underscores in the variable name). Parsing
# stops at the first argument that does not start with `--`; what remains is "$@".
#   --help, -h        print $help_message on stderr and exit 0
#   --config FILE     source FILE (bash `var=value` lines) before the command-line options, so
#                     the command line wins; several --config are sourced left to right.
#                     Exception: a script that declares its own `config` variable owns --config
#                     (neurosel's steps/ take a YAML stage config that way); then --config is an
#                     ordinary option and nothing is sourced.
# Errors (message on stderr naming the option, exit 1):
#   an option whose variable the script does not set ("invalid option --foo"), an option given
#   as --name=value, an option without a value, a value other than true/false for an option
#   whose default is true or false, a missing config file, and an empty --cmd.
# Safe under `set -euo pipefail`; values are assigned verbatim (no eval), so --cmd "queue.pl -q x"
# keeps its spaces.

# A --config file is sourced only when the script has no `config` variable of its own.
if [ -z "${config+set}" ]; then
  config=
  _po_source_configs=true
else
  _po_source_configs=false
fi

# Pass 1: the config files, which have lower priority than the command line.
if $_po_source_configs; then
  _po_i=1
  while [ "$_po_i" -lt $# ]; do
    _po_arg=${!_po_i}
    case $_po_arg in
      --config)
        _po_next=$((_po_i + 1))
        _po_file=${!_po_next}
        if [ ! -r "$_po_file" ]; then
          echo "$0: missing config '$_po_file'" >&2
          exit 1
        fi
        . "$_po_file"
        _po_i=$((_po_i + 2))
        ;;
      --help|-h) _po_i=$((_po_i + 1)) ;;
      --*) _po_i=$((_po_i + 2)) ;;
      *) break ;;
    esac
  done
fi

# Pass 2: the command-line options, in order.
while [ $# -gt 0 ]; do
  case $1 in
    --help|-h)
      if [ -n "${help_message:-}" ]; then
        printf '%s\n' "$help_message" >&2
      else
        echo "No help found." >&2
      fi
      exit 0
      ;;
    --*=*)
      echo "$0: options to scripts must be of the form --name value, got '$1'" >&2
      exit 1
      ;;
    --*)
      _po_name=${1#--}
      _po_name=${_po_name//-/_}
      if ! [[ $_po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!_po_name+set}" ]; then
        echo "$0: invalid option $1" >&2
        exit 1
      fi
      if [ $# -lt 2 ]; then
        echo "$0: option $1 needs a value" >&2
        exit 1
      fi
      _po_old=${!_po_name}
      if { [ "$_po_old" = true ] || [ "$_po_old" = false ]; } && [ "$2" != true ] && [ "$2" != false ]; then
        echo "$0: expected \"true\" or \"false\": $1 $2" >&2
        exit 1
      fi
      printf -v "$_po_name" '%s' "$2"
      shift 2
      ;;
    *) break ;;
  esac
done

# An empty --cmd is almost always a scripting error (an unset variable in a caller).
if [ -n "${cmd+set}" ] && [ -z "$cmd" ]; then
  echo "$0: empty argument to --cmd option" >&2
  exit 1
fi

unset _po_source_configs _po_i _po_arg _po_next _po_file _po_name _po_old
true
