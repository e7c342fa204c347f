#!/usr/bin/env bash
# test/structure_test.sh: the shape of the code (TAP; run by
# test/in-cluster.sh through prove, after the build):
#
#  1. no cycle between object files: with nm, an edge A -> B when A.o uses
#     a symbol B.o defines; every strongly connected component is a single
#     file (so modules layer, and no two files call each other);
#  2. no function over 120 lines in the training core (src/train*.c,
#     src/phase_*.c, src/unit_*.c, src/row_store.c, src/model_store.c,
#     src/kept_rows.c, src/joined_keys.c).
#
# Needs the objects of a build (make) in src/.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

echo "1..3"
shopt -s nullglob
objs=(src/*.o)
if [ "${#objs[@]}" -lt 10 ]; then
    echo "not ok 1 - the objects are built (run make first)"
    echo "not ok 2 - no cycle between object files # SKIP no objects"
    echo "not ok 3 - no function over 120 lines # SKIP"
    exit 1
fi
echo "ok 1 - ${#objs[@]} objects built"

# "file defined|undefined symbol" lines for every object
for o in "${objs[@]}"; do
    nm --defined-only -g "$o" | awk -v f="$o" 'NF == 3 { print f, "D", $3 }'
    nm -u "$o" | awk -v f="$o" '{ print f, "U", $NF }'
done | perl -e '
    my (%def, %uses, %edges);
    while (<>) {
        my ($f, $k, $s) = split;
        if ($k eq "D") { $def{$s} = $f } else { push @{$uses{$f}}, $s }
    }
    for my $f (keys %uses) {
        for my $s (@{$uses{$f}}) {
            my $g = $def{$s};
            $edges{$f}{$g}{$s} = 1 if defined $g && $g ne $f;
        }
    }
    # Tarjan: strongly connected components of more than one file
    my ($index, @stack, %idx, %low, %on, @bad) = (0);
    my $visit;
    $visit = sub {
        my $v = shift;
        $idx{$v} = $low{$v} = $index++;
        push @stack, $v; $on{$v} = 1;
        for my $w (sort keys %{$edges{$v} || {}}) {
            if (!exists $idx{$w}) { $visit->($w); $low{$v} = $low{$w} if $low{$w} < $low{$v} }
            elsif ($on{$w}) { $low{$v} = $idx{$w} if $idx{$w} < $low{$v} }
        }
        if ($low{$v} == $idx{$v}) {
            my @c;
            while (1) { my $w = pop @stack; $on{$w} = 0; push @c, $w; last if $w eq $v }
            push @bad, [sort @c] if @c > 1;
        }
    };
    my %all = map { $_ => 1 } (keys %uses, values %def);
    $visit->($_) for grep { !exists $idx{$_} } sort keys %all;
    if (@bad) {
        print "not ok 2 - no cycle between object files\n";
        for my $c (@bad) {
            my %in = map { $_ => 1 } @$c;
            print "# cycle: @$c\n";
            for my $f (@$c) {
                for my $g (sort keys %{$edges{$f}}) {
                    next unless $in{$g};
                    print "#   $f -> $g: ", join(", ", sort keys %{$edges{$f}{$g}}), "\n";
                }
            }
        }
        exit 1;
    }
    my $n = 0; $n += scalar keys %{$edges{$_}} for keys %edges;
    print "ok 2 - no cycle between object files ($n dependencies between ", scalar(keys %all), " files)\n";
' || status=1

# function bodies: from a "{" in column 0 to the next "}" in column 0
long=$(awk '
    FNR == 1 { infn = 0 }
    /^\{/ { infn = 1; start = FNR; name = prev; next }
    /^\}/ { if (infn && FNR - start - 1 > 120) printf "%s:%d %s (%d lines)\n", FILENAME, start, name, FNR - start - 1; infn = 0; next }
    /^[a-zA-Z_]/ { prev = $0 }
' src/train*.c src/phase_*.c src/unit_*.c src/row_store.c src/model_store.c src/kept_rows.c src/joined_keys.c)
if [ -z "$long" ]; then
    echo "ok 3 - no function over 120 lines in the training core"
else
    echo "not ok 3 - no function over 120 lines in the training core"
    printf '%s\n' "$long" | sed 's/^/# /'
    status=1
fi
exit "${status:-0}"
