"""Word lists for the synthetic skills: keys, entity names and place names.

Written for longforge (not copied from any package). RULER draws its needle keys from the `wonderwords`
adjective and noun lists; the training data deliberately uses *different* words, so a score on RULER measures
copying a key the model has not seen as a key during training rather than recalling one it has.
"""

ADJECTIVES = tuple(
    """
    able absent abstract abundant academic acidic active actual adorable adventurous afraid agile airy alert
    alive amber ambitious amused ancient angry annual anxious arctic arid aromatic artistic ashen athletic
    atomic autumn average awake awkward balmy bare basic bashful bent bitter bizarre blank bleak blind blissful
    blond blue blunt blurry bold bony bored bouncy brave brief bright brilliant brisk brittle broad broken bronze
    brown bubbly bulky bumpy busy calm candid capable careful careless casual cautious celestial central
    certain charming cheap cheerful chilly chubby circular civic civil classic clean clear clever cloudy
    clumsy coastal cold colossal comfy common compact complex concrete confident constant cool copper coral
    cosmic costly cozy crafty crimson crisp crooked crowded cruel crunchy cubic curious curly curved cute
    damp dapper daring dark dashing dazzling deep defiant delicate dense dependable desert devout dim direct
    dirty distant divine dizzy dormant double drab dreamy dry dull dusty dynamic eager early earnest easy
    eastern edgy elastic elder electric elegant elfin eloquent emerald empty endless energetic enormous
    epic equal eternal even evergreen exact exotic expert faded faint fair faithful famous fancy fast fearless
    feathery feisty fertile festive fierce fiery filthy fine firm fixed flaky flat flawless fleet flexible
    floral fluffy fluid foggy fond formal fragile fragrant frail frank free fresh friendly frigid frosty
    frozen frugal full fuzzy gallant gentle genuine giant gifted gilded glad glassy gleaming glossy glowing
    golden graceful grand granite grateful grave gray greasy great green grim gritty groovy gruff grumpy
    hairy handy happy hardy harsh hasty hazy healthy hearty heavy hefty helpful hidden hilly hollow homely
    honest hopeful horizontal hot huge humble humid hungry icy idle ideal immense indigo infinite inland
    inner innocent intense ivory jade jagged jolly jovial joyful juicy jumbo keen kind knotty large last
    late lavish lawful lazy leafy lean left legal lemon level light likely lilac limp linear liquid little
    lively livid lofty lone lonely long loose loud lovely loyal lucid lucky lunar lush magenta magnetic
    main major majestic marble marine maroon massive mature meager mellow merry metal mighty mild milky
    minor minty misty modern modest moist molten mossy muddy murky musical mute narrow native natural neat
    nervous neutral nimble noble noisy normal northern novel numb oaken obedient odd olive opal open orange
    ornate outer oval pale parched patient peaceful pearly perfect pink plain playful pleasant plucky plump
    plush polar polished polite poor portly precious pretty prickly primary prime proper proud puny purple
    quaint quick quiet radiant rapid rare raspy raw ready real regal remote rich rigid ripe rising robust
    rocky rosy rough round royal ruby rugged rural rustic rusty sacred salty sandy scarlet scenic secret
    serene shaggy shallow sharp shiny short shy silent silky silver simple sincere sleek sleepy slender
    slim slow small smart smoky smooth snowy soft solar solid sonic sour southern spare sparkling spicy
    spiral splendid spotted square stable stale steady steep sticky stiff still stony stormy stout strange
    strict striped strong sturdy subtle sudden sunny super swift tall tame tangy tender tense thick thin
    thirsty tidy tiny tired topaz tough tranquil tribal tropical true twin uneven unique upper urban usual
    valiant vast velvet violet vital vivid wacky warm wary wavy weary western wet wide wild windy wise
    witty wooden woolly worn young zany zealous zesty
    """.split()
)

NOUNS = tuple(
    """
    abbey acorn actor admiral agent alarm album alley almond altar amulet anchor angle ankle antenna anvil
    apple apricot apron arch archer arena armor arrow artist atlas attic auction aunt avenue axle badge
    bagel baker balcony ball ballad balloon bamboo banana band banjo banner barn barrel basket bay beach
    beacon bead beam bean bear beaver bed bee beetle bell belt bench berry bicycle bird biscuit bison blade
    blanket blossom boat bonnet book boot bottle boulder bow bowl box bracelet branch bread brick bridge
    brook broom brush bucket buffalo bugle builder bundle bunny butter button cabin cable cactus cake camel
    camera camp canal candle cannon canoe canyon cape captain car caravan card cargo carpet carrot cart castle
    cat cave cedar cellar chair chalk channel chapel chariot cheese cherry chess chest chimney church cider
    circle circus citadel city clam cliff clock cloud clover coach coast coat cobra coconut coin comet
    compass cookie copper coral corn cottage cotton couch court cousin cow coyote crab cradle crane crater
    crayon creek cricket crown crystal cup cupboard curtain cushion cymbal dagger dairy daisy dancer deer
    desk diamond dinner dolphin donkey door dove dragon drawer dream drum duck dune eagle ear easel echo
    eel elbow elephant elm ember emerald engine envelope falcon farm feather fence fern ferry fiddle field
    fig finch fire fish flag flame flask fleet flute fog forest fork fort fossil fountain fox frog fruit
    furnace gadget galaxy garden garlic gate gazelle gem geyser ghost giant ginger giraffe glacier glove
    goat goblet goose gorilla grape grass guitar gull hammer hamster harbor harp hat hawk hazel hedge helmet
    hen herb heron hill hive honey hook horizon horn horse hotel house hut iceberg igloo inn insect island
    ivy jacket jaguar jar jelly jewel jigsaw journal jungle kayak kettle key kitchen kite kitten knight
    koala ladder ladle lagoon lake lamb lamp lantern lark lemon lens leopard letter library lighthouse lily
    lime lion lizard llama lobster locket lotus lynx magnet magpie mammoth mango mantis map maple marble
    market marsh mask meadow medal melon mermaid meteor mill minnow mint mirror mitten moat mole monk monkey
    moon moose moth mountain mouse mule museum mushroom needle nest net nickel notebook nut oak oar oasis
    ocean octopus olive onion orange orchard orchid ostrich otter owl ox oyster paddle pagoda palace palm
    panda panther parade parrot pasta path peach peacock peak pear pearl pebble pelican pencil penguin
    pepper piano pickle pier pigeon pillow pilot pine pipe pirate planet plank plate plum pocket poet pond
    pony poppy porch portrait potato pottery prairie prism puddle puffin pumpkin puppet puzzle pyramid
    quail quarry queen quill quilt rabbit raccoon radar radio raft rainbow raisin ranch raven reef ribbon
    rice riddle ring river road robin rocket rose ruby rudder saddle sail sailor salmon sandal satchel
    saucer scarf scroll sculpture seal shark shell shelter shield ship shovel shrimp silk singer sketch
    skiff sled slipper snail snake sofa sparrow spider spire sponge spoon squid squirrel stable stadium
    star statue stove strawberry stream street student sugar summit swan sword table tablet tailor tapestry
    teapot telescope temple tent thimble thistle thunder tiger timber toad toast tomato tower tractor
    trail train treasure tree trellis trolley trophy trout trumpet tulip tundra tunnel turkey turnip turtle
    umbrella unicorn valley vase velvet vessel village vine violin volcano wagon walnut walrus wand
    warehouse wasp waterfall weasel whale wheat wheel whistle willow window wizard wolf wombat yacht yak
    yarn zebra zeppelin zipper
    """.split()
)

FIRST_NAMES = tuple(
    """
    Ada Alma Anika Arlo Asa Aurelio Bea Benedikt Bram Cato Celia Cyrus Dalia Dario Delphine Dmitri Edda
    Elio Elsa Emeric Enzo Esme Ezra Fenna Florin Freya Gideon Greta Hale Hana Hugo Ida Ines Ivo Jasper
    Jonas Juno Kai Kalinda Kasimir Keira Lars Leona Linus Livia Lorcan Lucia Magnus Mara Matteo Milo Mira
    Nadia Nico Nilo Nora Odile Olek Orla Osric Paz Petra Quentin Quinn Rafe Rhea Rosalind Rune Sabine
    Silas Soren Stellan Tamsin Teodor Thea Tobin Ulla Ursula Valen Vera Viggo Wren Xavi Yara Yusuf Zada
    Zeno Amara Basil Corin Daphne Evander Farah Ilse Jorah Katya Leif Maren Niamh Oriel Pilar Roisin
    """.split()
)

LAST_NAMES = tuple(
    """
    Abernathy Alcott Ashdown Balfour Barrow Blackwood Brandt Calloway Castellan Cheval Corrigan Crane
    Dalgaard Devereux Drummond Eastwick Ellery Falk Fairbanks Fenwick Galloway Garrick Gresham Halloran
    Hartwell Holm Ingram Iversen Jardine Kessler Kincaid Lachance Lindqvist Lockhart Marlowe Merrick
    Montague Navarro Norquist Oakes Okafor Ortega Pellham Penrose Quill Radcliffe Ravensworth Rourke
    Salazar Sandoval Selwyn Sorensen Stroud Tennant Thorne Trevelyan Underhill Valdez Vance Varga Waverly
    Whitlock Winslow Wexley Yardley Zeller Achebe Bergstrom Castillo Dunmore Ekwueme Ferrante Grimaldi
    Haddad Ishikawa Jovanovic Kowalczyk Lindahl Moreau Nakamura Oyelaran Petrakis Quintero Rasmussen
    Szabo Takeda Uchenna Vasquez Wojcik Yamamoto Zaragoza
    """.split()
)

# Place names are built from these syllables (onset + middle + ending), so a world holds many names that
# exist nowhere else: the model cannot know facts about them except from the context.
PLACE_ONSETS = tuple(
    "Al Bel Bran Cal Cor Dal Dun El Fen Gal Glen Har Hol Ist Kel Lan Lor Mar Mel Nor Or Pel "
    "Quen Ros Sal Tam Tor Ul Val Wen Yar Zel".split()
)
PLACE_MIDDLES = tuple("a e i o u ar en il or an".split())
PLACE_ENDINGS = tuple("bury dale ford gard haven holm mere moor mouth port stead ton vik wick worth".split())
COUNTRY_ENDINGS = tuple("ia land mark onia stan avia eria".split())
COMPANY_WORDS = tuple("Works Systems Foundry Labs Traders Mills Press Holdings Brewery Shipyards Logistics".split())
