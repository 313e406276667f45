"""The variable names a SHELL outfile never assigns: those a shell, the
dynamic loader or a common child program acts on.

A run script typically does ``set -a; . /config/svc.rc; set +a`` and then
runs commands, so every name in the file lands in its environment and in
that of everything it starts.  A cloud-chosen ``PATH``, ``IFS``,
``BASH_ENV`` or ``LD_PRELOAD`` would take over the script (and, being run
as root, the device), however safely the value itself is quoted.  So
``acted_on(name)`` says whether a name is one to refuse; the SHELL format
refuses a config holding one, also when it is made by joining nested keys
(``{"LD": {"PRELOAD": ...}}`` is ``LD_PRELOAD``).  Names compare exactly, as
shells and the loader do: ``path`` and ``Path`` are ordinary names.

Where the list comes from (a name is on it when any source names it):

- POSIX.1-2017 XCU 2.5.3 "Shell Variables" (ENV, HOME, IFS, LANG, LC_*,
  LINENO, NLSPATH, PATH, PPID, PS1, PS2, PS4, PWD) and the shell utilities'
  own (cd: CDPATH, OLDPWD; getopts: OPTARG, OPTIND, OPTERR; fc: FCEDIT,
  HISTFILE, HISTSIZE; sh: MAIL, MAILCHECK, MAILPATH).
- POSIX.1-2017 XBD 8.2 and 8.3, the internationalisation variables and the
  "Other Environment Variables" POSIX itself warns applications not to
  conflict with (COLUMNS, EDITOR, LOGNAME, MAKEFLAGS, PAGER, SHELL, TERM,
  TMPDIR, TZ, USER, VISUAL, ...).
- bash(1) "Shell Variables" (BASH, BASHOPTS, BASH_*, SHELLOPTS, PS0, PS3,
  GLOBIGNORE, EXECIGNORE, FUNCNEST, TIMEFORMAT, TMOUT, POSIXLY_CORRECT,
  the read-only UID/EUID/PPID, lowercase ``auto_resume`` and ``histchars``,
  ...); dash(1) and BusyBox ash (shell/ash.c: its variables, and ``BB_*``
  switches such as BB_ASH_VERSION); ksh/mksh/zsh startup names a child
  script may be run by (FPATH, ZDOTDIR, NULLCMD, READNULLCMD, TMPPREFIX).
- ld.so(8) (every ``LD_*``) and glibc's list of variables it strips for
  set-uid programs, sysdeps/generic/unsecvars.h (GCONV_PATH, GETCONF_DIR,
  GLIBC_TUNABLES, HOSTALIASES, LOCALDOMAIN, LOCPATH, MALLOC_*, NIS_PATH,
  RESOLV_HOST_CONF, RES_OPTIONS, TZDIR).
- sudo's default env_delete and env_check lists (sudoers(5)): interpreter
  start-up hooks (PYTHON*, PERL*, RUBY*, JAVA_TOOL_OPTIONS), TERMINFO*,
  TERMCAP, TERMPATH, PATH_LOCALE, LANGUAGE, LINGUAS, COLORTERM, KRB5*.
- Beyond those, variables that make common child programs run other code,
  trust other certificates or talk through other hosts: NODE_*, LUA_*,
  TCLLIBPATH, PHPRC, CLASSPATH, GIT_*, XDG_*, LESS* (LESSOPEN runs a
  command), SSH_ASKPASS, SUDO_ASKPASS, SSL_*, OPENSSL_*, CURL_*, WGETRC,
  the proxy variables, and option variables (GZIP, XZ_*, TAR_OPTIONS, ...).

No I/O; MicroPython-friendly (a set, a tuple and str.startswith).
"""

# Exact names.
_NAMES = {
    # POSIX XCU 2.5.3 and the shell utilities
    "CDPATH", "ENV", "FCEDIT", "HISTFILE", "HISTSIZE", "HOME", "IFS", "LANG",
    "LINENO", "MAIL", "MAILCHECK", "MAILPATH", "NLSPATH", "OLDPWD", "OPTARG",
    "OPTERR", "OPTIND", "PATH", "PPID", "PS1", "PS2", "PS3", "PS4", "PWD",
    # POSIX XBD 8.3
    "ARFLAGS", "CC", "CFLAGS", "CHARSET", "COLUMNS", "DATEMSK", "DEAD",
    "EDITOR", "EXINIT", "FC", "FFLAGS", "GET", "GFLAGS", "HISTORY", "LEX",
    "LFLAGS", "LINES", "LISTER", "LOGNAME", "LPDEST", "MAILER", "MAILRC",
    "MAKEFLAGS", "MAKESHELL", "MANPATH", "MBOX", "MORE", "MSGVERB", "NPROC",
    "PAGER", "PRINTER", "PROCLANG", "PROJECTDIR", "RANDOM", "SECONDS",
    "SHELL", "TERM", "TERMCAP", "TMPDIR", "TZ", "USER", "VISUAL", "YACC",
    "YFLAGS",
    # bash(1) Shell Variables (BASH_*, COMP_*, READLINE_* are prefixes below)
    "BASH", "BASHOPTS", "BASHPID", "CHILD_MAX", "COMPREPLY", "COPROC",
    "DIRSTACK", "EMACS", "EPOCHREALTIME", "EPOCHSECONDS", "EUID",
    "EXECIGNORE", "FIGNORE", "FUNCNAME", "FUNCNEST", "GLOBIGNORE", "GLOBSORT",
    "GROUPS", "HISTCMD", "HISTCONTROL", "HISTFILESIZE", "HISTIGNORE",
    "HISTTIMEFORMAT", "HOSTFILE", "HOSTNAME", "HOSTTYPE", "IGNOREEOF",
    "INPUTRC", "INSIDE_EMACS", "MACHTYPE", "MAPFILE", "OSTYPE", "PIPESTATUS",
    "POSIXLY_CORRECT", "PROMPT_COMMAND", "PROMPT_DIRTRIM", "PS0", "REPLY",
    "SHELLOPTS", "SHLVL", "SRANDOM", "TIMEFORMAT", "TMOUT", "UID",
    "auto_resume", "histchars", "_",
    # ksh, mksh, zsh start-up and hooks (sudo's env_delete)
    "FPATH", "NULLCMD", "READNULLCMD", "TMPPREFIX", "ZDOTDIR",
    # glibc unsecvars.h (LD_*, MALLOC_*, GLIBC_* are prefixes below)
    "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
    "NIS_PATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR",
    # sudo's env_delete / env_check
    "COLORTERM", "LANGUAGE", "LINGUAS", "PATH_LOCALE", "TERMPATH",
    # child programs: interpreters, tools, TLS trust, proxies
    "CLASSPATH", "TCLLIBPATH", "PHPRC", "PHP_INI_SCAN_DIR", "SSH_ASKPASS",
    "SUDO_ASKPASS", "WGETRC", "GZIP", "BZIP", "BZIP2", "TAR_OPTIONS",
    "GREP_OPTIONS", "MANOPT", "MANPAGER", "http_proxy", "https_proxy",
    "ftp_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY",
    "FTP_PROXY", "ALL_PROXY", "NO_PROXY",
}

# Name prefixes: every name that starts with one of these.
_PREFIXES = (
    "LD_",  # ld.so(8)
    "BASH_", "COMP_", "READLINE_",  # bash(1)
    "BB_",  # BusyBox
    "KSH_",  # ksh, mksh
    "LC_",  # POSIX XBD 8.2
    "MALLOC_", "GLIBC_",  # glibc
    "PYTHON", "PERL", "RUBY", "JAVA_", "_JAVA_", "JDK_JAVA_", "NODE_", "LUA_",
    "GIT_", "XDG_", "LESS", "TERMINFO", "KRB5", "SSL_", "OPENSSL_", "CURL_",
    "XZ_", "ZSTD_",
)


def acted_on(name):
    """True if assigning ``name`` changes how the sourcing script or the
    programs it starts run (see the module docstring for the sources)."""
    return name in _NAMES or any(name.startswith(prefix) for prefix in _PREFIXES)
