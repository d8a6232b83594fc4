from cliprank.cli import main

main()
