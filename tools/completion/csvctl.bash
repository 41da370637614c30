# bash completion for csvctl (install as /usr/share/bash-completion/completions/csvctl)
_csvctl_volumes() {
	csvctl --json volume list 2>/dev/null |
		sed -n 's/^ *"name": "\([^"]*\)".*/\1/p'
}
_csvctl_nodes() {
	csvctl --json nodes 2>/dev/null | sed -n 's/^ *"id": \([0-9]*\).*/\1/p'
}
_csvctl() {
	local cur prev words cword
	_init_completion || return
	local i cmd="" sub="" nargs=0
	for ((i = 1; i < cword; i++)); do
		case "${words[i]}" in
		-s | --socket | --wait | --exec | --freeze-timeout | --preferred | -n | --interval | -c | --count)
			((i++)) ;;
		-*) ;;
		*)
			if [[ -z $cmd ]]; then cmd=${words[i]}
			elif [[ -z $sub && ( $cmd == volume || $cmd == backup ) ]]; then sub=${words[i]}
			else ((nargs++)); fi ;;
		esac
	done
	case "$prev" in
	-s | --socket) _filedir; return ;;
	--exec) COMPREPLY=($(compgen -c -- "$cur")); return ;;
	--wait | --freeze-timeout | --interval | -n | --count | -c) return ;;
	--preferred) COMPREPLY=($(compgen -W "$(_csvctl_nodes)" -- "$cur")); return ;;
	esac
	if [[ $cur == -* ]]; then
		local opts="--json --socket --help"
		case "$cmd" in
		move | redirect) opts+=" --wait" ;;
		backup) opts+=" --wait"; [[ $sub == begin ]] && opts+=" --exec --freeze-timeout" ;;
		stats) opts+=" --watch --interval --count" ;;
		keygen) opts+=" --force" ;;
		volume) [[ $sub == add ]] && opts+=" --preferred" ;;
		esac
		COMPREPLY=($(compgen -W "$opts" -- "$cur"))
		return
	fi
	case "$cmd" in
	"") COMPREPLY=($(compgen -W "status nodes volume move redirect backup stats keygen" -- "$cur")) ;;
	volume)
		case "$sub" in
		"") COMPREPLY=($(compgen -W "add remove list show" -- "$cur")) ;;
		remove | show) ((nargs == 0)) && COMPREPLY=($(compgen -W "$(_csvctl_volumes)" -- "$cur")) ;;
		add) ((nargs == 1)) && _filedir ;;
		esac ;;
	backup)
		case "$sub" in
		"") COMPREPLY=($(compgen -W "begin end" -- "$cur")) ;;
		*) ((nargs == 0)) && COMPREPLY=($(compgen -W "$(_csvctl_volumes)" -- "$cur")) ;;
		esac ;;
	move)
		((nargs == 0)) && COMPREPLY=($(compgen -W "$(_csvctl_volumes)" -- "$cur"))
		((nargs == 1)) && COMPREPLY=($(compgen -W "$(_csvctl_nodes)" -- "$cur")) ;;
	redirect)
		((nargs == 0)) && COMPREPLY=($(compgen -W "$(_csvctl_volumes)" -- "$cur"))
		((nargs == 1)) && COMPREPLY=($(compgen -W "on off" -- "$cur")) ;;
	keygen) _filedir ;;
	esac
} && complete -F _csvctl csvctl
