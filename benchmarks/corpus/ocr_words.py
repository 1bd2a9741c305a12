"""A fixed English vocabulary for the OCR corpus texts.

Kept in the repo rather than read from stdlib docstrings: docstrings change between Python
versions, and the rendered evaluation data must be the same bytes everywhere.
"""

from __future__ import annotations

_TEXT = """
    about above accept access account across action active actual adapter address advance
    after again agent agree allow almost alone along already always amount anchor annual
    answer append apply archive argument around array assert assign attach attempt author
    average backup balance banner basic battery before begin behind below better between
    binary border bottom bounded branch bridge broken browser bucket buffer builder button
    cache calendar camera cancel capital capture carbon career carrier castle cell center
    channel chapter charge check chosen circle class client closed cluster coffee column
    command common company compare compile complete config connect console contact content
    context control convert copper corner counter country course cover create credit
    current cursor custom damage danger daylight debug decimal decode default delete
    delivery depth design detail device dialog digital direct display distance divide
    document domain double draft driver during dynamic early editor effect element empty
    encode engine entry equal error escape evening event exact example export extend
    factor family feature field figure filter final finish first float folder follow
    forest format forward frame friend function garden gather general global golden
    graph green ground group guide handle harbor header health height hidden history
    holiday hollow import index inline input insert inside install integer island
    journal kernel keyboard ladder language large latest launch layer leader legacy
    length letter level library light limit linear listen little local logical lookup
    machine manual margin market master matrix medium member memory merge message method
    middle minute mirror mobile model module moment monitor morning mountain network
    neutral normal notice number object office offset online option orange order origin
    output owner package paper parent parse partial pattern payment pencil period permit
    picture pilot planet plastic player pocket policy portal position power prefix
    present primary printer private profile program project prompt proper public purple
    query quick random reader record reduce region release remote render report request
    reserve result return review river rocket router sample schema screen script search
    second secret select sender sequence server session shadow signal silver simple
    single socket source speaker special spring square stable status storage stream
    street string studio summer supply switch symbol system table target ticket timer
    token total tower track traffic travel triple update upload useful valley value
    vector version village visual volume wallet window winter worker yellow
"""

WORDS: tuple[str, ...] = tuple(_TEXT.split())
